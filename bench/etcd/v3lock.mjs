// etcd's own lock service (/v3/lock/lock and /v3/lock/unlock through etcd's JSON gateway) driven
// with the workloads of lmx-bench, so that bench/etcd.sh can put lmx over etcd beside it:
//   w1   one key, 20 workers          w2   20 keys, one per worker
//   w3   4 keys, 5 workers on each    lat  one worker, one key (the uncontended cycle)
// A worker takes a lease once, then locks on it and unlocks, cycle after cycle. Prints
// "<workload> = <cycles per ms> cycles/ms" as lmx-bench does.
//
//   node bench/etcd/v3lock.mjs --endpoint http://127.0.0.1:2379 --workload w1 [--cycles 3000]

import http from 'node:http';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    endpoint: { type: 'string' },
    workload: { type: 'string', default: 'w1' },
    cycles: { type: 'string', default: '3000' },
    prefix: { type: 'string', default: `bench-${process.pid}-` },
  },
});
// [workers per connection pool, pools, what a worker's key is named after]
const shapes = { w1: [20, 1, 'run'], w2: [20, 1, 'worker'], w3: [5, 4, 'pool'], lat: [1, 1, 'run'] };
const shape = shapes[opt.workload];
if (!opt.endpoint || !shape) {
  console.error('usage: v3lock.mjs --endpoint http://HOST:PORT --workload w1|w2|w3|lat [--cycles N]');
  process.exit(2);
}
const [perAgent, agents, keyOf] = shape;
const cycles = Number(opt.cycles);
const base = new URL(opt.endpoint);
const b64 = (s) => Buffer.from(s).toString('base64');

function post(agent, path, body) {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request({ host: base.hostname, port: base.port, path, method: 'POST', agent,
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { text += c; });
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`${path}: HTTP ${res.statusCode} ${text}`));
        resolve(JSON.parse(text));
      });
    });
    req.on('error', reject);
    req.end(data);
  });
}

const workers = [];
for (let a = 0; a < agents; a++) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: perAgent });
  for (let i = 0; i < perAgent; i++) {
    const n = { run: 0, worker: workers.length, pool: a }[keyOf];
    workers.push({ agent, key: `${opt.prefix}${n}` });
  }
}
await Promise.all(workers.map(async (w) => { w.lease = (await post(w.agent, '/v3/lease/grant', { TTL: 60 })).ID; }));
let left = cycles;
const t0 = performance.now();
await Promise.all(workers.map(async (w) => {
  while (left > 0) {
    left--;
    const { key } = await post(w.agent, '/v3/lock/lock', { name: b64(w.key), lease: w.lease });
    await post(w.agent, '/v3/lock/unlock', { key });
  }
}));
const ms = performance.now() - t0;
console.log(`${opt.workload} = ${(cycles / ms).toFixed(3)} cycles/ms (${cycles} cycles in ${ms.toFixed(0)} ms)`);
await Promise.all(workers.map((w) => post(w.agent, '/v3/lease/revoke', { ID: w.lease }).catch(() => {})));
for (const w of workers) w.agent.destroy();
