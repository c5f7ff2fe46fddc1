/** Browser side of the QLoRA benchmark. */
import { requestDevice } from '../src/index.js';
import { formatQloraBench, runQloraBench } from './qlora.js';
import { publish } from './page.js';

await publish(async (log) => runQloraBench(await requestDevice({ powerPreference: 'high-performance' }), { log }), formatQloraBench);
