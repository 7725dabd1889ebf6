/**
 * A real redis-server for queue tests (installed by scripts/setup.sh):
 *
 *   const port = await freePort();
 *   const redis = await startRedis(port, dataDir);   // resolves once it accepts connections
 *   redis.kill("SIGKILL");
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer } from "node:net";
import { delimiter, join } from "node:path";

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export function redisOnPath(): boolean {
  return (process.env["PATH"] ?? "").split(delimiter).some((dir) => dir !== "" && existsSync(join(dir, "redis-server")));
}

export function startRedis(port: number, dir: string): Promise<ChildProcess> {
  const redis = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir], { stdio: ["ignore", "pipe", "pipe"] });
  const log: string[] = [];
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`redis-server did not start: ${log.join("")}`)), 10_000);
    redis.stdout!.on("data", (d: Buffer) => {
      log.push(d.toString());
      if (/Ready to accept connections/.test(d.toString())) {
        clearTimeout(t);
        resolve(redis);
      }
    });
    redis.once("exit", (code) => reject(new Error(`redis-server exited (${code}): ${log.join("")}`)));
  });
}
