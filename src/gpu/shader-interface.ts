/**
 * A shader's host interface, generated from its WGSL by scripts/embed-shaders.mjs into
 * src/kernels/shaders.gen.ts: kernels bind storage buffers and set uniforms by the names the WGSL
 * declares, and every name is checked against it.
 */
export interface ShaderInterface {
  /** The uniform struct (binding 0): its variable and its 4-byte scalar fields in declaration order. */
  uniforms: { binding: number; variable: string; fields: [string, 'u32' | 'i32' | 'f32'][] } | null;
  /** Storage bindings by variable name. */
  storage: Record<string, number>;
  /** The storage bindings whose elements are f32 (a view of packed 16-bit values may not bind there). */
  f32Storage: string[];
  /** Pipeline-overridable constants. */
  overrides: string[];
  /** Module constants with numeric values (tile sizes), for hosts that must agree with them. */
  constants: Record<string, number>;
  /** Per entry point: the storage bindings it statically uses (all must be bound) and whether it reads the uniforms. */
  entryPoints: Record<string, { storage: string[]; uniforms: boolean }>;
}
