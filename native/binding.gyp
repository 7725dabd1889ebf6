{
  # The OpenBLAS Node-API addon: native/build/Release/selfreport_blas.node.
  # Built by scripts/build-native.mjs (node-gyp rebuild) at `npm ci`; optional at run time.
  "targets": [
    {
      "target_name": "selfreport_blas",
      "sources": ["selfreport_blas.c"],
      # Debian/Ubuntu put cblas.h of libopenblas-dev under the multiarch pthread dir;
      # other distributions and source builds use /usr/include/openblas. A missing dir is harmless.
      "include_dirs": [
        "/usr/include/x86_64-linux-gnu/openblas-pthread",
        "/usr/include/aarch64-linux-gnu/openblas-pthread",
        "/usr/include/openblas",
        "/opt/OpenBLAS/include"
      ],
      "libraries": ["-lopenblas", "-lm", "-lpthread"],
      # The reassociation flags let GCC vectorise the row kernels' max/sum reductions; no
      # -ffinite-math-only, because -inf (masked scores) must keep its meaning.
      "cflags": ["-O3", "-std=c11", "-Wall", "-Wextra", "-fno-math-errno", "-fassociative-math", "-fno-signed-zeros", "-fno-trapping-math", "-Wno-psabi"],
      "cflags!": ["-O2"],
      "conditions": [
        ["OS=='mac'", {
          "include_dirs": ["/opt/homebrew/opt/openblas/include", "/usr/local/opt/openblas/include"],
          "libraries": ["-L/opt/homebrew/opt/openblas/lib", "-L/usr/local/opt/openblas/lib"],
          "xcode_settings": { "OTHER_CFLAGS": ["-O3"] }
        }]
      ]
    }
  ]
}
