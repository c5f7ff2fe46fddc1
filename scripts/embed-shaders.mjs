// Embeds shaders/*.wgsl into src/kernels/shaders.gen.ts so the browser, workers and Node load the same
// text without fetch or fs. The one substitution: a line `// #include lib/NAME.wgsl` is replaced by that
// file's text (shared helpers such as workgroup reductions). Feature variants are made the same way: a
// shader that includes lib/workgroup_reduce.wgsl gets a 'subgroups' variant with lib/subgroup_reduce.wgsl
// in its place and `enable subgroups;` first, which devices with that feature compile instead; one that
// includes lib/half_read.wgsl an 'f16' variant reading 16-bit operands with f16 loads. A shader has at most
// one variant (they would otherwise need combining). Run by npm scripts; never edit the output.
import { readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const shaderDir = join(root, 'shaders');
const out = join(root, 'src/kernels/shaders.gen.ts');

/** Feature variants: the included file each swaps, its replacement, and the directive it needs. */
const VARIANTS = {
  subgroups: { swap: 'lib/workgroup_reduce.wgsl', with: 'lib/subgroup_reduce.wgsl', enable: 'subgroups' },
  f16: { swap: 'lib/half_read.wgsl', with: 'lib/half_read_f16.wgsl', enable: 'f16' },
};

function expand(file, seen = new Set(), variant = null) {
  if (seen.has(file)) throw new Error(`include cycle at ${file}`);
  seen.add(file);
  const text = readFileSync(join(shaderDir, file), 'utf8');
  return text.replace(/^\/\/ #include (\S+)\s*$/gm, (_, inc) => {
    if (variant && inc === variant.swap) inc = variant.with;
    if (!existsSync(join(shaderDir, inc))) throw new Error(`${file}: missing include ${inc}`);
    return `// ---- begin ${inc}\n${expand(inc, new Set(seen), variant).trimEnd()}\n// ---- end ${inc}`;
  });
}

/** The variant's text of a shader, or null when the shader does not include what the variant swaps. */
function expandVariant(file, variant) {
  const text = expand(file, new Set(), variant);
  if (text === expand(file)) return null;
  return `enable ${variant.enable};\n${text}`;
}

/**
 * The host interface of a shader, read from its WGSL: the uniform struct's fields in order (all 4-byte
 * scalars, binding 0), the storage bindings by name, override constants, module constants (tile sizes),
 * and for each entry point the bindings it statically uses (what WebGPU's automatic layout expects bound):
 * the binding names referenced by the entry point and every function it calls, comments excluded.
 */
export function shaderInterface(name, text) {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/[^\n]*/g, '');
  const bindings = {};
  const f32Storage = [];
  let uniforms = null;
  // Every buffer declaration must be in the one form read below (group 0, then binding), or the
  // interface would silently miss it.
  const declared = (code.match(/\bvar<(uniform|storage)\b/g) ?? []).length;
  const parsed = [...code.matchAll(/@group\(0\)\s*@binding\((\d+)\)\s*var<(\w+)(?:\s*,\s*(\w+))?>\s*(\w+)\s*:\s*([^;]+);/g)].length;
  if (declared !== parsed) throw new Error(`${name}: ${declared - parsed} buffer declaration(s) not written as '@group(0) @binding(N) var<...> name: type;'`);
  for (const m of code.matchAll(/@group\(0\)\s*@binding\((\d+)\)\s*var<(\w+)(?:\s*,\s*(\w+))?>\s*(\w+)\s*:\s*([^;]+);/g)) {
    const [, binding, space, , varName, type] = m;
    if (space === 'uniform') {
      const struct = new RegExp(`struct\\s+${type.trim()}\\s*\\{([^}]*)\\}`).exec(code);
      if (!struct) throw new Error(`${name}: no struct ${type} for the uniform ${varName}`);
      const fields = struct[1].split(',').map((f) => f.trim()).filter(Boolean).map((f) => {
        const [field, fieldType] = f.split(':').map((x) => x.trim());
        if (/@/.test(f)) throw new Error(`${name}: uniform field '${f}' has an attribute; fields are packed 4-byte scalars in order`);
        if (!['u32', 'i32', 'f32'].includes(fieldType)) throw new Error(`${name}: uniform field ${field} is ${fieldType}; only 4-byte scalars are supported`);
        return [field, fieldType];
      });
      if (Number(binding) !== 0) throw new Error(`${name}: the uniform struct must be binding 0, found ${binding}`);
      uniforms = { binding: 0, variable: varName, fields };
    } else {
      if (Number(binding) === 0) throw new Error(`${name}: storage ${varName} at binding 0, which is the uniforms'`);
      bindings[varName] = Number(binding);
      if (/\bf32\b|vec\df\b|mat\dx\df\b/.test(type)) f32Storage.push(varName);
    }
  }
  const overrides = [...code.matchAll(/^override\s+(\w+)/gm)].map((m) => m[1]);
  const constants = {};
  for (const m of code.matchAll(/^const\s+(\w+)\s*(?::\s*\w+)?\s*=\s*(-?[\d.eE+-]+)u?\s*;/gm)) constants[m[1]] = Number(m[2]);
  // Top-level functions with their bodies (brace matching), then the module-scope identifiers each
  // references: names it declares itself (parameters, let/var/const) shadow bindings of the same name.
  const functions = {};
  for (const m of code.matchAll(/\bfn\s+(\w+)\s*\(/g)) {
    let i = code.indexOf('{', m.index);
    const paramsText = code.slice(m.index + m[0].length, i);
    let depth = 0;
    for (; i < code.length; i++) {
      if (code[i] === '{') depth++;
      else if (code[i] === '}' && --depth === 0) break;
    }
    const text = code.slice(m.index + m[0].length, i + 1);
    const declared = new Set([
      ...[...paramsText.matchAll(/(\w+)\s*:/g)].map((d) => d[1]),
      ...[...text.matchAll(/\b(?:let|var|const)\s+(\w+)/g)].map((d) => d[1]),
    ]);
    // Member accesses (v.x, p.rows) are not references to module-scope names.
    functions[m[1]] = new Set((text.match(/(?<![.\w])[A-Za-z_]\w*/g) ?? []).filter((id) => !declared.has(id)));
  }
  const entryPoints = {};
  for (const m of code.matchAll(/@compute[^{]*?\bfn\s+(\w+)/g)) {
    const seen = new Set();
    const visit = (fn) => {
      if (seen.has(fn)) return;
      seen.add(fn);
      for (const id of functions[fn] ?? []) if (functions[id]) visit(id);
    };
    visit(m[1]);
    const used = new Set();
    for (const fn of seen) for (const id of functions[fn]) if (id in bindings) used.add(id);
    const usesUniforms = uniforms && [...seen].some((fn) => functions[fn].has(uniforms.variable));
    entryPoints[m[1]] = { storage: Object.keys(bindings).filter((b) => used.has(b)), uniforms: Boolean(usesUniforms) };
  }
  return { uniforms, storage: bindings, f32Storage, overrides, constants, entryPoints };
}

export function generate() {
  const names = readdirSync(shaderDir).filter((f) => f.endsWith('.wgsl')).sort();
  let ts = '// GENERATED by scripts/embed-shaders.mjs from shaders/*.wgsl. Do not edit; run `npm run shaders`.\n';
  ts += "import type { ShaderInterface } from '../gpu/shader-interface.js';\n\n";
  ts += 'export const SHADERS: Record<string, string> = {\n';
  for (const f of names) ts += `  ${JSON.stringify(f.replace(/\.wgsl$/, ''))}: ${JSON.stringify(expand(f))},\n`;
  ts += '};\n\n';
  ts += '/** Each shader\'s host interface, read from its WGSL (see scripts/embed-shaders.mjs). */\n';
  ts += 'export const SHADER_INTERFACES: Record<string, ShaderInterface> = {\n';
  for (const f of names) {
    const name = f.replace(/\.wgsl$/, '');
    ts += `  ${JSON.stringify(name)}: ${JSON.stringify(shaderInterface(name, expand(f)))},\n`;
  }
  ts += '};\n\n';
  ts += '/** Per device feature, the shaders that have a variant for it (same host interface), by name. */\n';
  for (const f of names) {
    const has = Object.entries(VARIANTS).filter(([, v]) => expandVariant(f, v) !== null).map(([k]) => k);
    if (has.length > 1) throw new Error(`${f}: variants ${has.join(' and ')} would need combining`);
  }
  ts += `export const SHADER_VARIANTS: Record<${Object.keys(VARIANTS).map((v) => JSON.stringify(v)).join(' | ')}, Record<string, string>> = {\n`;
  for (const [feature, variant] of Object.entries(VARIANTS)) {
    ts += `  ${feature}: {\n`;
    for (const f of names) {
      const name = f.replace(/\.wgsl$/, '');
      const text = expandVariant(f, variant);
      if (text === null) continue;
      // The variant is bound exactly like the base shader; a difference would be a bug in the library file.
      if (JSON.stringify(shaderInterface(name, text)) !== JSON.stringify(shaderInterface(name, expand(f)))) {
        throw new Error(`${name}: its ${feature} variant has a different host interface`);
      }
      ts += `    ${JSON.stringify(name)}: ${JSON.stringify(text)},\n`;
    }
    ts += '  },\n';
  }
  ts += '};\n';
  return ts;
}

const text = generate();
const old = existsSync(out) ? readFileSync(out, 'utf8') : '';
if (process.argv.includes('--check')) {
  if (old !== text) {
    console.error('src/kernels/shaders.gen.ts is stale: run `npm run shaders`');
    process.exit(1);
  }
} else if (old !== text) {
  writeFileSync(out, text);
  console.log(`wrote ${out}`);
}
