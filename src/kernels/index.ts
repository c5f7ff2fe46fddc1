export * from './matmul.js';
export * from './adamw.js';
export * from './int4.js';
export * from './sparse.js';
export * from './reduce.js';
export * from './elementwise.js';
export { launch1d } from './common.js';
export * from './norm.js';
