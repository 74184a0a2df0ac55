"""Where a process's samples go, from `perf script -F comm,tid,ip,sym,dso`.

Reads perf script's output (with call chains) on stdin and prints, as
shares of all samples:
- by the shared object of the sampled instruction;
- by the work each sample was done for, found from the functions on its
  stack (the first rule below that matches wins);
- cross-cutting: samples with WAL, commit or SPI code on their stack;
- the top symbols by self samples.
With --us-per-row US, each share is also given in microseconds of a row.

python3 bench/perf_shares.py [--us-per-row US] [--top N] < perf-script.txt
"""
import argparse
import collections
import re
import sys

# (label, functions any of which on the stack claims the sample, shared
# objects the sampled instruction may lie in to claim it); first match wins.
CATEGORIES = [
    ('import (CSV from S3 into the results table)',
     {'batchproc_import_csv', 'import_step'}, ()),
    ('export', {'batchproc_export'}, ()),
    ('result writes (the group UPDATE of the results, dead letters, batch counters; its commit)',
     {'flush_results', 'batchproc_results_write'}, ()),
    ('pending-row reads (SELECT ... ORDER BY _row_id LIMIT, UPDATE _attempts = 1; commit)',
     {'refill_queue'}, ()),
    ('batch state check (UPDATE batchproc.batches SET in_flight)', {'check_state'}, ()),
    ('signing (SigV4: canonical request, HMAC, SHA-256 of the body)',
     {'batchproc_sigv4_sign', 'batchproc_sha256_hex', 'sign_canonical', 'compute_signature'},
     ('libcrypto',)),
    ('JSON (row input and payload, answer parse, output extraction)',
     {'batchproc_row_input', 'batchproc_row_payload', 'batchproc_extract_outputs',
      'batchproc_unwrap_result', 'batchproc_target_outcome', 'batchproc_tool_outcome',
      'finish_row'},
     ('libjansson',)),
    ('wait loop (WaitEventSet rebuilt and waited on)',
     {'rebuild_wait_set', 'WaitEventSetWait', 'CreateWaitEventSet', 'FreeWaitEventSet',
      'AddWaitEventToSet', 'ModifyWaitEvent'}, ()),
    ('curl (HTTP transport, its sockets in the kernel)',
     {'batchproc_http_start', 'batchproc_http_progress', 'batchproc_http_wait',
      'wait_and_drive_capped', 'reap_finished', 'batchproc_http_free', 'release_request',
      'curl_multi_socket_action', 'curl_multi_perform', 'curl_multi_add_handle',
      'curl_multi_remove_handle', 'curl_easy_cleanup', 'curl_easy_init'},
     ('libcurl', 'libnghttp2', 'libssl')),
    ('request building (call name, target request, headers)',
     {'send_call', 'batchproc_target_request', 'batchproc_aws_json_request'}, ()),
    ('dispatch loop itself', {'batchproc_dispatch'}, ()),
]

# Within the categories that run SQL, which part of the statement's life.
SQL_CATEGORIES = ('result writes', 'pending-row reads', 'batch state check')
SQL_PARTS = [
    ('commit', {'CommitTransaction', 'CommitTransactionCommand', 'RecordTransactionCommit'}),
    ('parse, analyse, plan', {'pg_plan_queries', 'pg_analyze_and_rewrite_fixedparams',
                              'pg_analyze_and_rewrite_withcb', 'pg_analyze_and_rewrite_varparams',
                              'raw_parser', 'pg_parse_query', '_SPI_prepare_plan',
                              'RevalidateCachedQuery', 'BuildCachedPlan', 'GetCachedPlan'}),
    # postgres is stripped: ExecModifyTable and its kin are static, so the
    # writes are seen by what they call.
    ('executor, writing tuples and index entries',
     {'heap_update', 'heap_insert', 'heap_multi_insert', 'ExecInsertIndexTuples',
      'index_insert', 'heap_index_delete_tuples', 'ExecUpdateLockMode'}),
    ('executor, scans and sorts', {'standard_ExecutorRun', 'ExecutorRun', 'ExecutePlan'}),
    ('executor start/end', {'standard_ExecutorStart', 'standard_ExecutorEnd', 'ExecutorStart',
                            'ExecutorEnd', 'FreeExecutorState'}),
]

CROSS = [
    ('WAL (XLogInsert and below, XLogFlush)',
     {'XLogInsert', 'XLogInsertRecord', 'XLogFlush', 'XLogWrite', 'XLogBackgroundFlush',
      'issue_xlog_fsync', 'CopyXLogRecordToWAL', 'log_heap_update'}),
    ('commit (CommitTransaction)', {'CommitTransaction', 'CommitTransactionCommand'}),
    ('SPI statements (SPI_execute*, planning and execution)',
     {'SPI_execute', 'SPI_execute_with_args', 'SPI_execute_plan', 'SPI_execute_extended',
      '_SPI_execute_plan'}),
    ('planning (pg_plan_queries, pg_analyze_and_rewrite)',
     {'pg_plan_queries', 'pg_plan_query', 'planner', 'pg_analyze_and_rewrite_fixedparams',
      'pg_analyze_and_rewrite_withcb', 'pg_analyze_and_rewrite_varparams', 'raw_parser'}),
    ('malloc/free (libc)', {'malloc', 'free', 'realloc', 'calloc', 'cfree', '_int_malloc',
                            '_int_free', 'malloc_consolidate'}),
]


def short_dso(path):
    name = path.rsplit('/', 1)[-1]
    return re.sub(r'\.so[.0-9]*$', '', name) or path


def frames_of(block):
    """(symbol, dso) of each frame, leaf first; a function inlined into
    another is a frame of its own, in the object of the frame below it."""
    out = []
    for line in block[1:]:
        m = re.match(r'\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$', line)
        if not m:
            continue
        sym = re.sub(r'\+0x[0-9a-f]+$', '', m.group(1))
        out.append((sym, short_dso(m.group(2))))
    for i in range(len(out) - 1, -1, -1):
        if out[i][1] == 'inlined':
            out[i] = (out[i][0], out[i + 1][1] if i + 1 < len(out) else '?')
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--us-per-row', type=float)
    ap.add_argument('--top', type=int, default=25)
    args = ap.parse_args()

    total = 0
    by_dso = collections.Counter()
    by_cat = collections.Counter()
    by_cross = collections.Counter()
    by_sym = collections.Counter()
    cat_syms = collections.defaultdict(collections.Counter)
    cat_parts = collections.defaultdict(collections.Counter)
    block = []

    def take(block):
        nonlocal total
        frames = frames_of(block)
        if not frames:
            return
        total += 1
        leaf_sym, leaf_dso = frames[0]
        by_dso[leaf_dso] += 1
        sym = leaf_sym if leaf_sym != '[unknown]' else '[unknown] (%s)' % leaf_dso
        by_sym[sym] += 1
        names = {f[0] for f in frames}
        for label, funcs, dsos in CATEGORIES:
            if names & funcs or any(leaf_dso.startswith(d) for d in dsos):
                break
        else:
            label = 'other, in %s' % leaf_dso
        by_cat[label] += 1
        cat_syms[label][sym] += 1
        if label.startswith(SQL_CATEGORIES):
            for part, funcs in SQL_PARTS:
                if names & funcs:
                    break
            else:
                part = 'around the statement (arguments, results, transaction start)'
            cat_parts[label][part] += 1
        for clabel, funcs in CROSS:
            if names & funcs:
                by_cross[clabel] += 1

    for line in sys.stdin:
        line = line.rstrip('\n')
        if line.strip() == '':
            if block:
                take(block)
            block = []
        else:
            block.append(line)
    if block:
        take(block)
    if total == 0:
        sys.exit('no samples')

    def share(n):
        s = '%5.1f%%' % (100.0 * n / total)
        if args.us_per_row:
            s += ' %7.1f us/row' % (args.us_per_row * n / total)
        return s

    print('samples: %d' % total)
    print('\nby shared object of the sampled instruction:')
    for dso, n in by_dso.most_common(12):
        print('  %s  %s' % (share(n), dso))
    print('\nby the work the sample was for (first matching rule):')
    for label, n in by_cat.most_common():
        top = ', '.join('%s %.0f%%' % (s, 100.0 * c / n) for s, c in cat_syms[label].most_common(4))
        print('  %s  %s\n           top: %s' % (share(n), label, top))
        for part, m in cat_parts[label].most_common():
            print('             %s  %s' % (share(m), part))
    print('\ncross-cutting (samples with this on the stack, overlapping the above):')
    for clabel, _ in CROSS:
        print('  %s  %s' % (share(by_cross[clabel]), clabel))
    print('\ntop %d symbols by self samples:' % args.top)
    for sym, n in by_sym.most_common(args.top):
        print('  %s  %s' % (share(n), sym))


if __name__ == '__main__':
    main()
