/** Browser side of the training benchmark. */
import { requestDevice } from '../src/index.js';
import { formatTrainBench, runTrainBench } from './train.js';
import { publish } from './page.js';

await publish(async (log) => runTrainBench(await requestDevice({ powerPreference: 'high-performance' }), { log }), formatTrainBench);
