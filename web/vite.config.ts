import { defineConfig } from "vite";

// The stubs in ../gen/ts import @bufbuild/protobuf; it resolves from here.
export default defineConfig({
  resolve: { dedupe: ["@bufbuild/protobuf"] },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "es2022",
    // Reproducible output: the built files are committed and checked.
    sourcemap: false,
  },
});
