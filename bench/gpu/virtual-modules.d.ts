/** Provided by bench/gpu/pack.ts when it bundles the kit: each kit test file by name, to import on demand. */
declare module 'kit:tests' {
  const testModules: [file: string, load: () => Promise<unknown>][];
  export default testModules;
}
