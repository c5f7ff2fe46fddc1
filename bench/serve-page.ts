/** Browser side of the adapter cache's benchmark. */
import { requestDevice, shippedModel } from '../src/index.js';
import { formatServeBench, runServeBench } from './serve.js';
import { publish } from './page.js';

await publish(async (log) => runServeBench(await requestDevice({ powerPreference: 'high-performance' }), shippedModel(undefined, { base: '/models/' }), { log }), formatServeBench);
