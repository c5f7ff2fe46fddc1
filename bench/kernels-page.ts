/** Browser side of the kernel benchmark. */
import { requestDevice } from '../src/index.js';
import { formatKernelBench, runKernelBench } from './kernels.js';
import { publish } from './page.js';

await publish(async (log) => runKernelBench(await requestDevice({ powerPreference: 'high-performance' }), { log }), formatKernelBench);
