#!/bin/bash
# usage: tlsab.sh PAIRS
cd /work/main
B=bench/GrpcBoard.Bench/bin/Release/net10.0/GrpcBoard.Bench.dll
S=src/GrpcBoard.Server/bin/Release/net10.0/GrpcBoard.Server.dll
for i in $(seq 1 $1); do
  for v in tls plain; do
    rm -rf /tmp/s4/data-$v; mkdir -p /tmp/s4/data-$v
    if [ $v = tls ]; then R="localhost:6391,ssl=true --redis-tls-ca /tmp/tlsx/ca.crt"; else R="127.0.0.1:6392"; fi
    GRPCBOARD_LOG_LEVEL=Warning dotnet $S --port 50071 --store redis --data /tmp/s4/data-$v --redis-prefix p$i$v --redis $R > /tmp/s4/srv-$v-$i.log 2>&1 &
    SP=$!
    sleep 4
    PID=$(pgrep -f "GrpcBoard.Server.dll --port 50071")
    dotnet $B claim-only --client lean --target http://127.0.0.1:50071/ --server-pid $PID > /tmp/s4/tlsab-$v-$i.txt 2>&1
    kill $PID; wait $SP 2>/dev/null
    echo "$v$i: $(grep -E '^claims  ' /tmp/s4/tlsab-$v-$i.txt | sed 's/  */ /g') | $(grep -E '^  ClaimTask ' /tmp/s4/tlsab-$v-$i.txt | awk '{print "p50",$4,"p99",$6}') | $(grep 'server process cpu' /tmp/s4/tlsab-$v-$i.txt | sed 's/.*; //') | $(grep verdict /tmp/s4/tlsab-$v-$i.txt | sed 's/  */ /g')"
  done
done
