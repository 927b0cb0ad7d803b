# roomcast: chat rooms that span every replica. `just` lists the recipes.

set shell := ["bash", "-cu"]
set dotenv-load

# Image tag of `just build` and the first `just deploy`.
export TAG := env("TAG", "latest")

bin := justfile_directory() / "bin"

# The release recipes run cmd/roomcast-release (roomcast-release -h), built into bin/ first.
release := "go build -o " + quote(bin / "roomcast-release") + " ./cmd/roomcast-release && exec " + quote(bin / "roomcast-release")

# List the recipes.
default:
    @just --list

# Run one replica with an embedded NATS server on :8080 (chat page at http://localhost:8080/).
run:
    go run ./cmd/roomcast

# Run the test suite as CI does (tests needing nginx, prometheus, dockerd or chromium skip without them).
test:
    go test -race -timeout 30m ./...

# Build the binaries into bin/ (CGO off, static, version from git).
build-bin:
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p {{bin}}
    version=$(git describe --tags --always --dirty 2>/dev/null || echo dev)
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o {{bin}}/ ./cmd/...

# Benchmarks: Go micro-benchmarks, then every loadgen scenario against one replica (embedded NATS; fanout-large and the ramp also batched and with history off), a reconnect storm with and without an accept rate, and fanout-large against one replica and then two on one nats-server. DURATION sets each scenario's length.
bench DURATION="20s": build-bin
    #!/usr/bin/env bash
    set -euo pipefail
    go test -run '^$' -bench . -benchmem ./pkg/...
    [ -x {{bin}}/nats-server ] || go build -o {{bin}}/nats-server github.com/nats-io/nats-server/v2
    pids=()
    stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
    trap stop EXIT
    wait_ready() {
      for _ in $(seq 1 100); do curl -fsS "http://$1/readyz" >/dev/null 2>&1 && return 0; sleep 0.1; done
      echo "replica at $1 did not become ready" >&2; return 1
    }
    fast="ROOMCAST_RATE_LIMIT=1000000 ROOMCAST_RATE_BURST=1000000 ROOMCAST_LOG_LEVEL=warn ROOMCAST_DRAIN_DELAY=0s ROOMCAST_DRAIN_TIMEOUT=1s"

    serve() { # ADDR ENV...: start a replica, wait until ready, leave its PID in $server
      local addr=$1; shift
      env $fast ROOMCAST_ADDR="$addr" "$@" {{bin}}/roomcast & pids+=($!); server=$!
      wait_ready "$addr"
    }
    gen() { {{bin}}/roomcast-loadgen -no-thresholds -duration {{DURATION}} "$@"; }
    # The ramp's steps: 64k, 90k, 128k, 181k, 256k, 362k, 512k deliveries/s (5s each).
    ramp="-rate 64 -ramp-factor 1.41421356"

    echo "== one replica, embedded NATS, history on (the default)"
    serve 127.0.0.1:18181
    for scenario in fanout-small fanout-large; do
      echo "-- $scenario"
      gen -scenario "$scenario" -url ws://127.0.0.1:18181 -server-pid "$server"
    done
    echo "-- ramp (its own time: steps of 5s until p99 > 100ms, a loss, or 90s)"
    {{bin}}/roomcast-loadgen -no-thresholds -scenario ramp $ramp -duration 90s -url ws://127.0.0.1:18181 -server-pid "$server"
    kill "$server"; wait "$server" || true

    echo "== one replica, history on, batched delivery (loadgen -batch true: roomcast.batch.v1)"
    serve 127.0.0.1:18187
    echo "-- fanout-large, batched"
    gen -scenario fanout-large -batch true -url ws://127.0.0.1:18187 -server-pid "$server"
    echo "-- ramp, batched"
    {{bin}}/roomcast-loadgen -no-thresholds -scenario ramp $ramp -batch true -duration 90s -url ws://127.0.0.1:18187 -server-pid "$server"
    echo "-- fanout-large, batched, each room's sends spread over the second (-interleave true)"
    gen -scenario fanout-large -batch true -interleave true -url ws://127.0.0.1:18187 -server-pid "$server"
    kill "$server"; wait "$server" || true

    echo "== one replica, history on, batched delivery with ROOMCAST_BATCH_DELAY=5ms"
    serve 127.0.0.1:18188 ROOMCAST_BATCH_DELAY=5ms
    echo "-- fanout-large, batched (a room's members send one after another)"
    gen -scenario fanout-large -batch true -url ws://127.0.0.1:18188 -server-pid "$server"
    echo "-- fanout-large, batched, each room's sends spread over the second (-interleave true)"
    gen -scenario fanout-large -batch true -interleave true -url ws://127.0.0.1:18188 -server-pid "$server"
    kill "$server"; wait "$server" || true

    echo "== one replica, history off (core NATS only)"
    serve 127.0.0.1:18184 ROOMCAST_HISTORY_SIZE=0
    echo "-- fanout-large"
    gen -scenario fanout-large -url ws://127.0.0.1:18184 -server-pid "$server"
    echo "-- ramp"
    {{bin}}/roomcast-loadgen -no-thresholds -scenario ramp $ramp -duration 90s -url ws://127.0.0.1:18184 -server-pid "$server"
    kill "$server"; wait "$server" || true

    echo "== the floor: roomcast-baseline, a minimal gws broadcast server (one process, no broker, no history)"
    ROOMCAST_ADDR=127.0.0.1:18189 ROOMCAST_LOG_LEVEL=warn {{bin}}/roomcast-baseline & pids+=($!); server=$!
    wait_ready 127.0.0.1:18189
    echo "-- fanout-large"
    gen -scenario fanout-large -url ws://127.0.0.1:18189 -server-pid "$server"
    echo "-- ramp"
    {{bin}}/roomcast-loadgen -no-thresholds -scenario ramp $ramp -duration 90s -url ws://127.0.0.1:18189 -server-pid "$server"
    kill "$server"; wait "$server" || true

    echo "== a fresh replica holding 10,000 idle connections for a minute"
    serve 127.0.0.1:18185
    {{bin}}/roomcast-loadgen -no-thresholds -scenario idle -conns 10000 -duration 60s -url ws://127.0.0.1:18185 -server-pid "$server"
    kill "$server"; wait "$server" || true

    echo "== a reconnect storm: 5,000 clients drop at once and reconnect, with ROOMCAST_ACCEPT_RATE=1000 and without"
    ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    for rate in 1000 0; do
      serve 127.0.0.1:18186 ROOMCAST_ACCEPT_RATE=$rate
      echo "-- reconnect-storm, accept rate $rate/s (0: none)"
      {{bin}}/roomcast-loadgen -no-thresholds -scenario reconnect-storm -conns 5000 -url ws://127.0.0.1:18186 -server-pid "$server"
      kill "$server"; wait "$server" || true
    done

    echo "== one replica, then two, on one nats-server with JetStream"
    store=$(mktemp -d)
    {{bin}}/nats-server -a 127.0.0.1 -p 14222 -js -sd "$store" & pids+=($!); nats=$!
    sleep 0.5
    serve 127.0.0.1:18182 NATS_URL=nats://127.0.0.1:14222 ROOMCAST_INSTANCE=a; a=$server
    echo "-- fanout-large on one replica (CPU of the replica and nats-server)"
    gen -scenario fanout-large -url ws://127.0.0.1:18182 -server-pid "$a,$nats"
    serve 127.0.0.1:18183 NATS_URL=nats://127.0.0.1:14222 ROOMCAST_INSTANCE=b; b=$server
    echo "-- fanout-large across both replicas (CPU of both replicas and nats-server)"
    gen -scenario fanout-large -url ws://127.0.0.1:18182,ws://127.0.0.1:18183 -server-pid "$a,$b,$nats"
    rm -rf "$store"

# Build the binaries, then the app image ROOMCAST_IMAGE:TAG and the edge image EDGE_IMAGE:TAG (nothing is pulled).
build TAG=TAG:
    stack/build {{TAG}}

# Start a Swarm lab on this machine (root): N nodes (node 1 manager, the others workers) in network namespaces and a registry; prints DOCKER_HOST of each node and REGISTRY (stack/lab).
lab-up N="3":
    stack/lab up {{N}}

# Tear the lab down: its daemons, registry, namespaces, bridge, rule and state, by PID and name.
lab-down:
    stack/lab down

# Label the nodes the stateful services are pinned to (their volumes are local to a node): roomcast.nats=true on NATS_NODES (default: as many nodes as NATS needs, managers first) and, with the NATS cluster, roomcast.nats-<member>=true on one of them for each of its three members, roomcast.monitoring=true on MONITORING_NODE (default: the manager at DOCKER_HOST), roomcast.app=false on APP_FREE_NODES (default: none; no app replica there). Node IDs or names, comma-separated. Labels already set stay. `just deploy` runs it first.
label-nodes:
    #!/usr/bin/env bash
    set -euo pipefail
    labelled() { docker node ls -q --filter "node.label=$1"; }
    add() { # LABEL NODE...
      local label=$1; shift
      for node in "$@"; do docker node update --label-add "$label" "$node" >/dev/null && echo "node $node: $label"; done
    }
    members=1
    if [ "${NATS_CLUSTER:-}" = true ] || [ -n "$(docker service ls -q --filter label=roomcast.nats-cluster=true)" ]; then
      members=3
    fi
    if [ -n "${NATS_NODES:-}" ]; then
      add roomcast.nats=true ${NATS_NODES//,/ }
    else
      have=$(labelled roomcast.nats=true)
      more=$(( members - $(printf '%s' "$have" | grep -c . || true) ))
      if [ "$more" -gt 0 ]; then
        add roomcast.nats=true $( { docker node ls -q --filter role=manager; docker node ls -q --filter role=worker; } | grep -vxF "${have:-none}" | head -n "$more")
      fi
    fi
    if [ "$members" -gt 1 ]; then
      # Each member of the cluster is pinned to one node by roomcast.nats-<member>=true
      # (stack/nats-cluster.yml). A cluster deployed as one service of 3 replicas (before
      # each member was a service of its own) leaves each member on its slot's node, where
      # its store is.
      if [ "$(docker service inspect edge_nats --format '{{{{.Spec.Mode.Replicated.Replicas}}' 2>/dev/null || echo 0)" -gt 1 ]; then
        for task in $(docker service ps -q --filter desired-state=running edge_nats); do
          read -r slot node < <(docker inspect "$task" --format '{{{{.Slot}} {{{{.NodeID}}')
          [ -n "$(labelled "roomcast.nats-$slot=true")" ] || add "roomcast.nats-$slot=true" "$node"
        done
      fi
      # Otherwise one member per NATS node (NATS_NODES in its order, or managers first);
      # with fewer nodes than members, some share a node and that node's loss takes two.
      if [ -n "${NATS_NODES:-}" ]; then
        nodes=(${NATS_NODES//,/ })
      else
        nodes=($(docker node ls -q --filter role=manager --filter node.label=roomcast.nats=true) $(docker node ls -q --filter role=worker --filter node.label=roomcast.nats=true))
      fi
      taken=$(for m in $(seq 1 "$members"); do labelled "roomcast.nats-$m=true"; done)
      free=($(printf '%s\n' "${nodes[@]}" | grep -vxF "${taken:-none}" || true))
      for m in $(seq 1 "$members"); do
        [ -z "$(labelled "roomcast.nats-$m=true")" ] || continue
        if [ "${#free[@]}" -gt 0 ]; then
          node=${free[0]}; free=("${free[@]:1}")
        else
          node=${nodes[$(( (m - 1) % ${#nodes[@]} ))]}
          echo "warning: NATS member $m shares node $node with another member: losing that node loses both" >&2
        fi
        add "roomcast.nats-$m=true" "$node"
      done
    fi
    if [ -n "${MONITORING_NODE:-}" ]; then
      add roomcast.monitoring=true "$MONITORING_NODE"
    elif [ -z "$(labelled roomcast.monitoring=true)" ]; then
      add roomcast.monitoring=true "$(docker info --format '{{{{.Swarm.NodeID}}')"
    fi
    if [ -n "${APP_FREE_NODES:-}" ]; then add roomcast.app=false ${APP_FREE_NODES//,/ }; fi

# First deploy: the edge stack (nginx, nats, prometheus, grafana, autoscaler) and the active color (blue at first). Never undoes a promote. EDGE_TAG upgrades the edge and autoscaler images.
deploy: label-nodes
    {{release}} deploy

# Release TAG to the idle color: deploy, wait healthy, smoke test, flip nginx (one label update), drain the old color.
promote TAG:
    {{release}} promote {{quote(TAG)}}

# Bring the previous color back, check it, flip nginx back, drain the other.
rollback:
    {{release}} rollback

# Active color, release lock, image tag and ready replicas of each color.
status:
    {{release}} status

# Set the replica count of the active color.
scale N:
    {{release}} scale {{quote(N)}}

# Break the release lock a killed release left (older than RELEASE_LOCK_STALE_AFTER; `just unlock -force` for any) and clear roomcast.promoting.
unlock *FLAGS:
    {{release}} unlock {{FLAGS}}

# Remove the Swarm secrets (old JWT keys, passwords, certificates, Alertmanager configurations) and edge configs that releases made and no service mounts any more; `just prune -dry-run` lists them.
[positional-arguments]
prune *FLAGS:
    {{release}} prune "$@"

# Remove both colors and the edge stack; their volumes (NATS, Prometheus, Alertmanager and Grafana data) stay unless `just down remove-volumes`. Refused while a release holds the lock.
down VOLUMES="keep":
    #!/usr/bin/env bash
    set -euo pipefail
    volumes={{quote(VOLUMES)}}
    case $volumes in
      keep|remove-volumes) ;;
      *) echo "usage: just down [remove-volumes]" >&2; exit 2 ;;
    esac
    lock=$(docker service inspect edge_nginx --format '{{{{index .Spec.Labels "roomcast.lock"}}' 2>/dev/null || true)
    if [ -n "$lock" ]; then
      echo "a release is under way (release lock: $lock): let it end, or just unlock" >&2
      exit 1
    fi
    docker stack rm blue green edge
    if [ "$volumes" = remove-volumes ]; then
      # A volume can go once no container of its stack is left.
      for _ in $(seq 1 120); do
        [ -z "$(docker ps -aq --filter label=com.docker.stack.namespace=edge)" ] && break
        sleep 1
      done
      mapfile -t vols < <(docker volume ls -q --filter label=com.docker.stack.namespace=edge)
      if [ ${#vols[@]} -gt 0 ]; then
        docker volume rm "${vols[@]}"
      fi
    fi

# Follow the logs of SERVICE (edge_nginx, blue_app, or short: nginx, prometheus, blue, green); without it, the last LOG_LINES (100) lines of every service of the edge stack and both colors.
logs SERVICE="":
    #!/usr/bin/env bash
    set -euo pipefail
    service={{quote(SERVICE)}}
    lines=${LOG_LINES:-100}
    if [ -z "$service" ]; then
      for s in $(docker service ls --format '{{{{.Name}}' --filter label=com.docker.stack.namespace=edge) \
               $(docker service ls --format '{{{{.Name}}' --filter name=blue_app --filter name=green_app); do
        echo "== $s"
        docker service logs --timestamps --tail "$lines" "$s" 2>&1
      done
      exit 0
    fi
    case $service in
      blue|green) service=${service}_app ;;
      *_*) ;;
      *) service=edge_$service ;;
    esac
    exec docker service logs --follow --timestamps --tail "$lines" "$service"

# Push the app and edge images of TAG (ROOMCAST_IMAGE, EDGE_IMAGE) to REGISTRY, a registry every node pulls from (host[:port]); names without it are tagged REGISTRY/NAME first. Deploy with ROOMCAST_IMAGE and EDGE_IMAGE under REGISTRY.
push TAG=TAG:
    #!/usr/bin/env bash
    set -euo pipefail
    registry=${REGISTRY:?set REGISTRY to the registry every node pulls from, e.g. registry.example.com:5000}
    registry=${registry%/}
    for name in "${ROOMCAST_IMAGE:-roomcast/roomcast}" "${EDGE_IMAGE:-roomcast/edge}"; do
      remote=$name
      [[ $name == "$registry"/* ]] || remote=$registry/$name
      [ "$remote" = "$name" ] || docker tag "$name:"{{quote(TAG)}} "$remote:"{{quote(TAG)}}
      docker push "$remote:"{{quote(TAG)}}
    done

# Print a token for the app on Swarm, signed with JWT_SECRET_FILE (default .secrets/jwt-secret, made by the first deploy), for the audience and issuer the stack checks (JWT_AUDIENCE, default roomcast; JWT_ISSUER, default roomcast-swarm): `just token alice 'lobby,team-*' 8h`.
token SUB ROOMS TTL="1h":
    @ROOMCAST_JWT_SECRET_FILE="${JWT_SECRET_FILE:-.secrets/jwt-secret}" ROOMCAST_JWT_AUDIENCE="${JWT_AUDIENCE:-roomcast}" ROOMCAST_JWT_ISSUER="${JWT_ISSUER:-roomcast-swarm}" go run ./cmd/roomcast token -sub {{quote(SUB)}} -rooms {{quote(ROOMS)}} -ttl {{quote(TTL)}}

# Run a k6 script of k6/ (fanout.js, smoke.js, soak.js, release.js) in the k6 image (K6_IMAGE, default grafana/k6:1.0.0) on the Swarm overlay network, against nginx (K6_URL, default ws://edge_nginx:8080), with a token for its rooms (k6-*) valid for K6_TOKEN_TTL (default 24h; K6_TOKEN overrides it); ARGS go to `k6 run`, e.g. `just k6 release.js -e ROOMS=50` while `just promote TAG` runs.
[positional-arguments]
k6 SCRIPT *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    dir={{quote(justfile_directory() / "k6")}}
    script=$(basename -- {{quote(SCRIPT)}})
    if [ ! -f "$dir/$script" ]; then
      echo "no k6 script k6/$script; there are: $(cd "$dir" && ls -- *.js | tr '\n' ' ')" >&2
      exit 2
    fi
    # The stacks require a token; the run's rooms are k6-<run>-<n>. The token goes through
    # the environment (k6 reads it as __ENV.TOKEN), never on a command line.
    TOKEN=${K6_TOKEN:-$({{quote(just_executable())}} --justfile {{quote(justfile())}} token k6 'k6-*' "${K6_TOKEN_TTL:-24h}")}
    export TOKEN
    # Copied in, not bind-mounted: the engine may be a remote one (DOCKER_HOST).
    # Each of ARGS stays one argument of `k6 run`, spaces and quotes included.
    id=$(docker create --network roomcast -e TOKEN -e URL="${K6_URL:-ws://edge_nginx:8080}" \
      "${K6_IMAGE:-grafana/k6:1.0.0}" run "${@:2}" "/scripts/$script")
    trap 'docker rm -f "$id" >/dev/null' EXIT
    docker cp "$dir/." "$id:/scripts"
    docker start -a "$id"
