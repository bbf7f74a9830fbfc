#!/bin/bash
# ssq.sh N: every 0.5 s, N times: bytes queued in loopback TCP sockets, grouped by
# the server port (server side: local port; client side: remote port).
for i in $(seq 1 $1); do
  ss -tnH state established 2>/dev/null | awk -v t=$i '
   { n=split($3,l,":"); lp=l[n]; n=split($4,p,":"); pp=p[n];
     S[lp]+=$1; SS[lp]+=$2; SN[lp]++; C[pp]+=$1; CS[pp]+=$2; CN[pp]++ }
   END { for (k in SN) if (SN[k] >= 50) printf "t%d port %s server-side conns %d recvq %d sendq %d | client-side recvq %d sendq %d\n", t, k, SN[k], S[k], SS[k], C[k], CS[k] }'
  sleep 0.5
done
