// Runs live-mutex 0.2.25's own broker (the npm package, unmodified) on one TCP port or one Unix
// socket, prints "ready" once listening, and stops on SIGTERM or SIGINT.
//
//   node lm-broker.mjs '{"port":31234}'        node lm-broker.mjs '{"udsPath":"/tmp/lm.sock"}'

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const { Broker } = require('live-mutex/dist/broker');

const opts = JSON.parse(process.argv[2] || '{}');
const b = new Broker({ host: '127.0.0.1', ...opts });
b.emitter.on('warning', () => {});
b.emitter.on('error', (e) => process.stderr.write(`live-mutex broker error: ${e}\n`));
for (const sig of ['SIGTERM', 'SIGINT']) {
  process.once(sig, () => {
    try { b.close(() => process.exit(0)); } catch { process.exit(0); }
    setTimeout(() => process.exit(0), 1000).unref();
  });
}
b.ensure().then(() => process.stdout.write('ready\n'), (e) => {
  process.stderr.write(`live-mutex broker did not start: ${e}\n`);
  process.exit(1);
});
