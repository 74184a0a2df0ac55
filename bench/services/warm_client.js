// Warms a benchmark target's Node process (its JIT, its accept path) with
// calls of a client other than the one measured: REQUESTS POSTs of
// {"name", "input", "id"} to URL, CONCURRENCY at a time, each on a
// connection of its own, as a worker's first calls come on new ones.
// Prints how many were answered 200 and how long they took.
//
// node warm_client.js URL REQUESTS CONCURRENCY
'use strict';
const http = require('http');

const [url, requests, concurrency] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const agent = new http.Agent({keepAlive: false, maxSockets: Infinity});
const started = process.hrtime.bigint();
let sent = 0;
let answered = 0;
let ok = 0;

function one() {
  if (sent >= requests)
    return;
  const id = ++sent;
  const body = JSON.stringify({name: 'echo', input: {key: 'warm' + id}, id: 'warm' + id});
  const req = http.request(url, {method: 'POST', agent,
    headers: {'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body)}}, (res) => {
    res.resume();
    res.on('end', () => {
      if (res.statusCode === 200)
        ok++;
      done();
    });
  });
  req.on('error', done);
  req.end(body);
}

function done() {
  if (++answered === requests) {
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    process.stdout.write(`${ok} of ${requests} warm-up calls answered 200 in ${ms.toFixed(0)} ms\n`);
    return;
  }
  one();
}

for (let i = 0; i < Math.min(concurrency, requests); i++)
  one();
