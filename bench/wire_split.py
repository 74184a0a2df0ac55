"""Where a batch's call cycle goes, from the packets on the loopback.

bench/littles_law.sh (WIRE=1) captures the target's port with tcpdump.
A call is the first packet with a payload that a connection sends the
target after the target's last answer on it (the request), and the
target's next packet with a payload on it (the answer); the kernel stamps
both the moment they pass between the two processes, so the interval
between them is the target's own time, its event loop included, and
nothing of the worker's.

For one batch (the calls whose request falls in [START, END], epoch
seconds) it prints:
- the target's time on the wire for a call: mean, p50, p99, and the mean
  for the first call of a new connection and for the other calls;
- for the new connections, how long after the worker opened one (its SYN)
  its first request followed: the worker's time to send on it, which
  includes the calls it started meanwhile;
- in the batch's middle (from its 5th to its 95th percentile of calls by
  request time, away from the ramp and the drain): the calls on the wire
  on average (their time on the wire within that window, over its
  length), the calls a second that gives by Little's law, the cycle of
  one of CONCURRENCY slots at that rate, and that cycle less the mean
  time on the wire: what the worker adds to each call, sending it,
  noticing its answer and filling the freed slot again.  (A rate counted
  from the sends at the window's two ends would be off by as much as the
  sends bunch within a cycle.)

python3 bench/wire_split.py PCAP PORT START END CONCURRENCY
"""
import bisect
import re
import statistics
import subprocess
import sys

PACKET = re.compile(r'^(\d+\.\d+) IP 127\.0\.0\.1\.(\d+) > 127\.0\.0\.1\.(\d+): Flags \[([^]]*)\].*length (\d+)')


def calls_on_wire(pcap, port):
    """(request time, answer time, when its connection was opened if the
    call is the connection's first, else None) of every call, in order."""
    dump = subprocess.run(['tcpdump', '-r', pcap, '-n', '-tt', '--time-stamp-precision=nano'],
                          capture_output=True, text=True, check=True).stdout
    asked = {}
    opened = {}
    calls = []
    for line in dump.splitlines():
        m = PACKET.match(line)
        if not m:
            continue
        at, src, dst, flags = float(m.group(1)), m.group(2), m.group(3), m.group(4)
        if dst == port and flags == 'S':
            opened[src] = at
        if int(m.group(5)) == 0:
            continue
        if dst == port:
            asked.setdefault(src, at)
        elif src == port and dst in asked:
            calls.append((asked.pop(dst), at, opened.pop(dst, None)))
    calls.sort()
    return calls


def ms(seconds):
    return seconds * 1000.0


def main():
    pcap, port, start, end, concurrency = sys.argv[1:6]
    start, end, concurrency = float(start), float(end), int(concurrency)
    calls = calls_on_wire(pcap, port)
    lo = bisect.bisect_left(calls, (start,))
    hi = bisect.bisect_right(calls, (end,))
    batch = calls[lo:hi]
    if len(batch) < 100:
        print(f'  on the wire: only {len(batch)} calls in the batch\'s window')
        return
    held = sorted(answer - request for request, answer, _ in batch)
    first = [answer - request for request, answer, syn in batch if syn is not None]
    later = [answer - request for request, answer, syn in batch if syn is None]
    print(f'  on the wire: the target took {ms(statistics.mean(held)):.2f} ms a call'
          f' (p50 {ms(held[len(held) // 2]):.2f}, p99 {ms(held[int(len(held) * 0.99)]):.2f});'
          + (f' {ms(statistics.mean(first)):.2f} for the first call of each of {len(first)} new connections'
             if first else ' no new connection')
          + (f', {ms(statistics.mean(later)):.2f} for the others' if later else ''))
    sent_after = sorted(request - syn for request, _, syn in batch if syn is not None)
    if sent_after:
        print(f'  a new connection\'s first request left {ms(statistics.mean(sent_after)):.2f} ms after it was'
              f' opened on average (max {ms(sent_after[-1]):.2f})')
    # The middle: away from the ramp and the drain.  Little's law on the
    # wire: the calls the target holds on average over the window, by the
    # mean time it holds one, is the rate; the slots not on the wire are
    # the worker's.
    skip = len(batch) // 20
    since, until = batch[skip][0], batch[-skip][0]
    held_in_window = sum(max(0.0, min(answer, until) - max(request, since)) for request, answer, _ in batch)
    on_wire = held_in_window / (until - since)
    middle = [answer - request for request, answer, _ in batch if since <= request <= until]
    wire = statistics.mean(middle)
    rate = on_wire / wire
    cycle = concurrency / rate
    print(f'  its middle ({until - since:.2f} s): {on_wire:.1f} of {concurrency} slots on the wire on average'
          f' at {ms(wire):.2f} ms a call = {rate:.0f} calls/s; a slot\'s cycle {ms(cycle):.2f} ms,'
          f' {ms(cycle - wire):.2f} of them the worker\'s (sending, noticing the answer, filling the slot again)')


if __name__ == '__main__':
    main()
