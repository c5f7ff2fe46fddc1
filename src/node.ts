/** Node entry: everything of the browser entry; Dawn is loaded by requestDevice() when it runs in Node. */
export * from './index.js';
export { folderCheckpointStore } from './node/checkpoint-folder.js';
