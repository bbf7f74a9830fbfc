#!/usr/bin/env python3
"""classify.py REPORT CPU_US_PER_OP: perf report lines (comm dso sym, self %)
-> CPU us per op by component."""
import re, sys
from collections import defaultdict
rep, us = sys.argv[1], float(sys.argv[2])
rows = []
for line in open(rep):
    m = re.match(r'\s*([\d.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.*)$', line)
    if m: rows.append((float(m.group(1)), m.group(2), m.group(3), m.group(4), m.group(5)))
tot = sum(r[0] for r in rows)
SCHED = r'schedule|switch|futex|wake|pick_next|enqueue|dequeue|update_curr|update_load|ttwu|select_task|raw_spin|hrtimer|idle|do_nanosleep|syscall_exit|exit_to_user|entry_SYSCALL|syscall_return|__x64_sys|native_sched|cpuacct|psi_|account|irq|apic|sysvec|rcu'
NET = r'tcp|ip_|skb|sock|inet|net_|napi|loopback|__dev|dst_|copy_user|copyin|copyout|_copy_to|_copy_from|epoll|ep_|sk_|__sys_|do_sys|release_sock|lock_sock|poll|eventfd|__fget|fput|fdget|security_'
ALLOC = r'^_?mi_|mi_free|mimalloc|clear_page|page_fault|do_anonymous|alloc_pages|handle_mm|__handle_mm|get_page|rmqueue|memcg|lru|folio|zap|unmap|mmap|madvise|do_user_addr|asm_exc_page|free_pages|free_unref|alloc::alloc|__rust_alloc|__rust_dealloc|realloc'
def comp(comm, dso, kind, sym):
    side = 'client (bench)' if dso == 'd-engine-bench' or comm.startswith('tokio-rt') else None
    if comm.startswith('dengine-apply'): return 'apply thread'
    if comm.startswith('dengine-wal'): return 'WAL thread (append+fdatasync)'
    if comm.startswith('dengine-core'): return 'consensus loop'
    if comm.startswith('dengine-net'): return 'replication (peer gRPC, net thread)'
    pre = 'bench: ' if comm.startswith('tokio-rt') else 'server workers: '
    if re.search(ALLOC, sym): return pre + 'allocation'
    if kind == 'k':
        if re.search(NET, sym): return pre + 'kernel TCP/syscalls'
        return pre + 'kernel scheduling/other'
    if re.search(r'prost|encode_varint|decode_varint|encoded_len|merge_loop|bytes_adapter|::encode::|::decode::', sym) and 'tonic' not in sym: return pre + 'protobuf'
    if re.search(r'h2::|hyper|tonic|http::|http_body|hpack|tower|GrpcMetrics|Counted', sym): return pre + 'HTTP/2 + gRPC (h2/hyper/tonic/tower)'
    if re.search(r'tokio::|parking_lot|std::sync|std::thread|crossbeam|Waker|wake|RawWaker', sym): return pre + 'tokio scheduling/sync'
    if re.search(r'auth::|validate|Gate', sym): return pre + 'auth/validation'
    if re.search(r'hdrhistogram|d_engine_bench|rand::', sym): return pre + 'bench own (histogram, keys)'
    if re.search(r'memmove|memcpy|memset|memcmp', sym): return pre + 'memcpy/memcmp'
    if re.search(r'd_engine', sym): return pre + 'd-engine request path (service/handle/client)'
    return pre + 'other user'
agg = defaultdict(float)
for p, comm, dso, kind, sym in rows: agg[comp(comm, dso, kind, sym)] += p
print(f"samples in processes: {tot:.2f}% of machine; CPU per op {us:.0f} us")
for k, v in sorted(agg.items(), key=lambda x: -x[1]):
    print(f"{k:60s} {v/tot*100:5.1f}%  {v/tot*us:6.1f} us")
