// A Lambda Invoke target for benchmarks, as fast as Node answers: no
// signature check, no faults.  POST /2015-03-31/functions/NAME/invocations
// with {"name", "input", "id"} answers 200
// {"type": "tool_result", "tool_use_id": id, "content": input} after
// --delay-ms (default 0).  Any other POST path answers the body back as
// {"echo": body}, for http targets and pg_net.  GET /_stats gives
// {"calls", "in_flight", "max_in_flight"}; POST /_reset clears them.
//
// node fast_target.js [--port N] [--delay-ms MS]
// prints its port on the first line, and ends when its stdin closes.
'use strict';
const http = require('http');

const args = process.argv.slice(2);
function option(name, fallback) {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
}
const port = option('--port', 0);
const delayMs = option('--delay-ms', 0);

let calls = 0;
let inFlight = 0;
let maxInFlight = 0;
let heldNs = 0n;
let held = 0;

function reply(res, status, body) {
  const data = Buffer.from(JSON.stringify(body));
  res.writeHead(status, {'Content-Type': 'application/json', 'Content-Length': data.length});
  res.end(data);
}

const server = http.createServer((req, res) => {
  const arrived = process.hrtime.bigint();
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method === 'GET' && req.url === '/_stats')
      return reply(res, 200, {calls, in_flight: inFlight, max_in_flight: maxInFlight, held_ms_mean: held ? Number(heldNs / BigInt(held)) / 1e6 : 0});
    if (req.method === 'POST' && req.url === '/_reset') {
      calls = 0;
      heldNs = 0n;
      held = 0;
      maxInFlight = inFlight;
      return reply(res, 200, {});
    }
    calls++;
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    let body;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
    } catch (e) {
      inFlight--;
      return reply(res, 400, {message: 'body is not JSON'});
    }
    const answer = req.url.includes('/invocations')
      ? {type: 'tool_result', tool_use_id: body && body.id, content: body && body.input}
      : {echo: body};
    const send = () => {
      inFlight--;
      reply(res, 200, answer);
      heldNs += process.hrtime.bigint() - arrived;
      held++;
    };
    if (delayMs > 0)
      setTimeout(send, delayMs);
    else
      send();
  });
});
server.keepAliveTimeout = 60000;
server.maxConnections = 10000;
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(server.address().port + '\n');
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
