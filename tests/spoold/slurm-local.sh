#!/usr/bin/env bash
# slurm-local.sh - a one-node Slurm cluster on loopback, for spoold's tests and benches.
# The project's copy of ../shared/reference/examples/slurm-local.sh: no JWT auth and no
# slurmrestd unless SLURM_LOCAL_REST=1 (spoold uses the CLI; auth_jwt.so is in a package
# tools/debian-packages.txt does not install).
#
# Tested on Debian 12 (Slurm 22.05.8, munge 0.5.15), as root, with no systemd as PID 1
# and no GPU. Nothing is written outside $SLURM_LOCAL_DIR (no /etc/slurm, no /etc/munge,
# no database): a private munged on its own socket, slurmctld, slurmd and slurmrestd,
# all started as plain background daemons and stopped by the PIDs recorded at start.
#
#   slurm-local.sh install   apt-get the Debian packages (no recommends)
#   slurm-local.sh up        write config, start munged, slurmctld, slurmd and two slurmrestd
#                            (JWT on 127.0.0.1:PORT, local auth on a unix socket)
#   slurm-local.sh env       print the exports a client needs (eval "$(slurm-local.sh env)")
#   slurm-local.sh smoke     sbatch/squeue/scancel/GRES/REST checks; exits non-zero on failure
#   slurm-local.sh bench [N] submit N trivial jobs, print submit/complete rates
#   slurm-local.sh status    sinfo + daemon PIDs
#   slurm-local.sh down      stop the daemons (SIGTERM, then SIGKILL) by their PIDs
#   slurm-local.sh clean     down, then remove $SLURM_LOCAL_DIR
#
# Knobs (environment):
#   SLURM_LOCAL_DIR        state dir             default ${TMPDIR:-/tmp}/slurm-local
#   SLURM_LOCAL_CPUS       CPUs the node offers  default $(nproc)  (more than nproc = oversubscribe)
#   SLURM_LOCAL_GPUS       fake GPUs (gres/gpu)  default 4         (0 = no GRES)
#   SLURM_LOCAL_CTLD_PORT  slurmctld port        default 6817
#   SLURM_LOCAL_SLURMD_PORT slurmd port          default 6818
#   SLURM_LOCAL_REST_PORT  slurmrestd TCP port   default 6820 (127.0.0.1 only; JWT auth)
#   SLURM_LOCAL_REST_USER  user slurmrestd runs as (it refuses root)  default slurm
#   SLURM_LOCAL_MIN_JOB_AGE  seconds a finished job stays in squeue (MinJobAge)  default 600
#                          (slurmctld purges older ones about once a minute; 2 is the
#                          smallest non-zero value slurm.conf(5) recommends)
#   SLURM_LOCAL_SMOKE_SLOW=1  smoke also checks TIMEOUT and requeue (about 3 more minutes)
set -euo pipefail

D=${SLURM_LOCAL_DIR:-${TMPDIR:-/tmp}/slurm-local}
CPUS=${SLURM_LOCAL_CPUS:-$(nproc)}
GPUS=${SLURM_LOCAL_GPUS:-4}
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6818}
REST_PORT=${SLURM_LOCAL_REST_PORT:-6820}
REST_USER=${SLURM_LOCAL_REST_USER:-slurm}
MIN_JOB_AGE=${SLURM_LOCAL_MIN_JOB_AGE:-600}
NODE=localhost
export SLURM_CONF="$D/etc/slurm.conf"

calc() { awk "BEGIN { printf \"%.3f\", $* }"; }
log() { printf 'slurm-local: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cmd_install() {
    # slurm-wlm-jwt-plugin carries auth_jwt.so (needed for slurmrestd with tokens).
    apt-get install -y --no-install-recommends \
        munge slurmctld slurmd slurm-client slurmrestd slurm-wlm-jwt-plugin curl
}

write_config() {
    mkdir -p "$D"/{etc,munge,keys,state,spool,log,run,fakedev}
    # munged: socket dir must be searchable by all; key private to the daemon's user.
    chmod 755 "$D" "$D/munge"; chmod 700 "$D/keys"
    [ -s "$D/keys/munge.key" ] || mungekey --create --keyfile="$D/keys/munge.key"
    chmod 600 "$D/keys/munge.key"
    # JWT key for auth/jwt (slurmctld signs/verifies; slurmrestd only forwards tokens).
    [ -s "$D/keys/jwt_hs256.key" ] || dd if=/dev/urandom of="$D/keys/jwt_hs256.key" bs=32 count=1 status=none
    chmod 600 "$D/keys/jwt_hs256.key"

    local gres_line="" node_gres=""
    if [ "$GPUS" -gt 0 ]; then
        # Fake GPUs. slurmd insists that each File= is a character or block device (a
        # plain file is logged as an error and the job gets no CUDA_VISIBLE_DEVICES); the
        # device is only stat()ed, never opened by Slurm. Indices follow gres.conf order.
        # First choice: char devices with /dev/null's major/minor (1,3) named nvidiaN.
        # Without CAP_MKNOD: distinct existing char devices (/dev/null, /dev/zero, ...,
        # up to 4). Beyond that: a count-only GRES (scheduled by count, but jobs get only
        # SLURM_GPUS_ON_NODE, no CUDA_VISIBLE_DEVICES).
        local i files="File=$D/fakedev/nvidia[0-$((GPUS - 1))]"
        for ((i = 0; i < GPUS; i++)); do
            [ -c "$D/fakedev/nvidia$i" ] && continue
            rm -f "$D/fakedev/nvidia$i"
            if ! mknod -m 666 "$D/fakedev/nvidia$i" c 1 3 2>/dev/null; then
                local devs=(/dev/null /dev/zero /dev/full /dev/urandom)
                if [ "$GPUS" -le ${#devs[@]} ]; then
                    log "mknod not permitted: fake GPUs on ${devs[*]:0:$GPUS}"
                    files=$(IFS=,; echo "File=${devs[*]:0:$GPUS}")
                else
                    log "mknod not permitted: count-only fake GPUs (no CUDA_VISIBLE_DEVICES)"
                    files="Count=$GPUS"
                fi
                break
            fi
        done
        # (AccountingStorageTRES=gres/gpu would be nice but slurmctld refuses it without slurmdbd)
        gres_line="GresTypes=gpu"
        node_gres="Gres=gpu:$GPUS"
        cat > "$D/etc/gres.conf" <<EOF
AutoDetect=off
NodeName=$NODE Name=gpu $files
EOF
    else
        rm -f "$D/etc/gres.conf"
    fi

    cat > "$D/etc/slurm.conf" <<EOF
# written by slurm-local.sh
ClusterName=spoold-local
SlurmctldHost=$NODE
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$D/munge/munge.socket.2
StateSaveLocation=$D/state
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in a container/microVM: track processes by /proc, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
# start jobs at once instead of batching submits for up to 3 s (default batch_sched_delay=3);
# what remains is slurmctld's 1 s background tick. Measured on the 2-core machine (100 jobs,
# gpu:1 each, 8 fake GPUs): 7.0-7.4 jobs/s with this line, sched/builtin, or
# sched_min_interval=0,max_rpc_cnt=0 added: no knob here changes it. What made launches
# slow (one every 1-3 s) was on the client side: sbatch --export=ALL,NAME=value sets
# SLURM_GET_USER_ENV=1, and slurmd then runs "su - <user>" (a login shell) before each launch.
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# no slurmdbd: final job states go to a flat file, one line per finished job
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$D/log/jobcomp.txt
# keep finished jobs visible to squeue/scontrol for this long (default 600 s here, 300 s in Slurm)
MinJobAge=$MIN_JOB_AGE
ReturnToService=2
MailProg=/bin/true
# bind slurmctld and slurmd to the address their host name resolves to (127.0.0.1), not 0.0.0.0
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
# trust the CPU count we declare even if it exceeds the real one
SlurmdParameters=config_overrides
$gres_line
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS Sockets=1 CoresPerSocket=$CPUS ThreadsPerCore=1 $node_gres State=UNKNOWN
PartitionName=local Nodes=$NODE Default=YES MaxTime=30 State=UP
EOF
}

pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local t=$1 what=$2; shift 2
    local end=$((SECONDS + t))
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $end ]; then
            tail -n 5 "$D"/log/*.log >&2 || true
            die "timed out waiting for $what (logs in $D/log)"
        fi
        sleep 0.2
    done
}

cmd_up() {
    command -v slurmctld >/dev/null || die "slurm not installed (run: $0 install)"
    write_config
    if ! pid_alive "$D/run/munged.pid"; then
        munged --key-file="$D/keys/munge.key" --socket="$D/munge/munge.socket.2" \
            --pid-file="$D/run/munged.pid" --log-file="$D/log/munged.log" \
            --seed-file="$D/keys/munged.seed"
        wait_for 10 munged munge -n -S "$D/munge/munge.socket.2"
    fi
    if ! pid_alive "$D/run/slurmctld.pid"; then
        slurmctld -f "$SLURM_CONF"   # recovers jobs from $D/state if any; "clean" wipes it
    fi
    wait_for 30 slurmctld scontrol ping
    if ! pid_alive "$D/run/slurmd.pid"; then
        slurmd -f "$SLURM_CONF" -N "$NODE"
    fi
    wait_for 30 "node idle" sh -c "sinfo -h -N -o %t | grep -qx idle"
    if [ "${SLURM_LOCAL_REST:-0}" = 1 ] && ! pid_alive "$D/run/slurmrestd.pid"; then
        # slurmrestd refuses to run as root or SlurmUser; it drops to REST_USER after binding.
        # Clients authenticate with a JWT from "scontrol token".
        # -s: only the v0.0.38 job API (the dbv* plugins need slurmdbd).
        chmod 755 "$D" "$D/etc" "$D/log" "$D/munge"; chmod 644 "$SLURM_CONF"
        SLURM_JWT=daemon SLURMRESTD_SECURITY=disable_unshare_files,disable_unshare_sysv \
            setsid slurmrestd -f "$SLURM_CONF" -a rest_auth/jwt -s openapi/v0.0.38 \
            -u "$REST_USER" "127.0.0.1:$REST_PORT" \
            >"$D/log/slurmrestd.log" 2>&1 < /dev/null &
        echo $! > "$D/run/slurmrestd.pid"
        wait_for 15 slurmrestd curl -s -o /dev/null "http://127.0.0.1:$REST_PORT/"
    fi
    if [ "${SLURM_LOCAL_REST:-0}" = 1 ] && ! pid_alive "$D/run/slurmrestd-local.pid"; then
        # Second instance, no tokens: rest_auth/local on a unix socket. It authenticates to
        # slurmctld with munge as its own uid, so jobs run as REST_USER; it accepts clients
        # of that uid or root (SO_PEERCRED). Cannot share a process with the JWT mode above
        # (SLURM_JWT=daemon there makes local-auth requests fail).
        mkdir -p "$D/rest"; chown "$REST_USER" "$D/rest"; chmod 755 "$D/rest"
        rm -f "$D/rest/slurmrestd.sock"
        SLURMRESTD_SECURITY=disable_unshare_files,disable_unshare_sysv \
            setsid slurmrestd -f "$SLURM_CONF" -a rest_auth/local -s openapi/v0.0.38 \
            -u "$REST_USER" "unix:$D/rest/slurmrestd.sock" \
            >"$D/log/slurmrestd-local.log" 2>&1 < /dev/null &
        echo $! > "$D/run/slurmrestd-local.pid"
        wait_for 15 slurmrestd-local test -S "$D/rest/slurmrestd.sock"
    fi
    log "up: $(sinfo -h -N -o '%N %t cpus=%c gres=%G')  rest=http://127.0.0.1:$REST_PORT (jwt)" \
        "unix:$D/rest/slurmrestd.sock (local auth)"
    log "client env: export SLURM_CONF=$SLURM_CONF"
}

stop_pidfile() { # stop_pidfile FILE NAME
    local f=$1 name=$2 pid i
    [ -s "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) ignored SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$f"
}

cmd_down() {
    # Cancel and drain our jobs first (slurmstepd outlives slurmd), then stop the daemons.
    if pid_alive "$D/run/slurmctld.pid"; then
        scancel --quiet --user="$(id -un)" 2>/dev/null || true
        drain 15 || true
    fi
    stop_pidfile "$D/run/slurmrestd.pid" slurmrestd
    stop_pidfile "$D/run/slurmrestd-local.pid" slurmrestd-local
    stop_pidfile "$D/run/slurmd.pid" slurmd
    stop_pidfile "$D/run/slurmctld.pid" slurmctld
    stop_pidfile "$D/run/munged.pid" munged
    log "down"
}

cmd_clean() { cmd_down; rm -rf "$D"; }

cmd_env() {
    echo "export SLURM_CONF=$SLURM_CONF"
    echo "export SLURM_LOCAL_REST=http://127.0.0.1:$REST_PORT"
    echo "export SLURM_LOCAL_REST_SOCK=$D/rest/slurmrestd.sock"
}

cmd_status() {
    local n
    for n in munged slurmctld slurmd slurmrestd slurmrestd-local; do
        if pid_alive "$D/run/$n.pid"; then echo "$n pid $(cat "$D/run/$n.pid")"; else echo "$n down"; fi
    done
    sinfo -N -o '%N %t %c %G' 2>/dev/null || true
}

# --- checks -------------------------------------------------------------------------

job_state() { scontrol show job "$1" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p'; }

drain() { # drain SECONDS: wait until the queue is empty
    local end=$((SECONDS + $1))
    while [ -n "$(squeue -h -o %i 2>/dev/null)" ]; do
        [ $SECONDS -lt $end ] || { log "queue not empty after $1 s"; return 1; }
        sleep 0.1
    done
}

wait_state() { # wait_state JOBID STATE SECONDS
    local end=$((SECONDS + $3)) s
    while :; do
        s=$(job_state "$1")
        [ "$s" = "$2" ] && return 0
        [ $SECONDS -lt $end ] || { log "job $1: state '$s', wanted $2"; return 1; }
        sleep 0.1
    done
}

cmd_smoke() {
    local fail=0 out="$D/smoke" id t0 t1 tok code i
    mkdir -p "$out"; rm -f "$out"/*
    ok() { log "ok   $*"; }
    bad() { log "FAIL $*"; fail=1; }

    # 1. a plain job runs to COMPLETED and leaves a jobcomp line
    t0=$(date +%s.%N)
    id=$(sbatch --parsable -o "$out/%j.out" --wrap 'echo hello from $SLURM_JOB_ID')
    for ((i = 0; i < 400; i++)); do
        case "$(job_state "$id")" in RUNNING|COMPLETED) break ;; esac
        sleep 0.05
    done
    t1=$(date +%s.%N)
    if wait_state "$id" COMPLETED 20 && grep -q "hello from $id" "$out/$id.out"; then
        ok "sbatch --wrap job $id COMPLETED (seen RUNNING or COMPLETED $(calc "$t1 - $t0") s after submit)"
    else bad "plain job $id"; fi
    if wait_for 10 jobcomp grep -q "JobId=$id .*JobState=COMPLETED" "$D/log/jobcomp.txt"; then
        ok "jobcomp/filetxt line for $id"
    else bad "no jobcomp line for $id"; fi
    [ "$(sacct -c -j "$id" -n -P -o State)" = COMPLETED ] \
        && ok "sacct -c (reads the jobcomp file, no slurmdbd) says COMPLETED" || bad "sacct -c for $id"

    # 2. scancel a running job -> CANCELLED
    id=$(sbatch --parsable -o /dev/null --wrap 'sleep 300')
    wait_state "$id" RUNNING 10 && scancel "$id" && wait_state "$id" CANCELLED 10 \
        && ok "scancel $id -> CANCELLED" || bad "scancel $id"

    # 3. non-zero exit -> FAILED with ExitCode
    id=$(sbatch --parsable -o /dev/null --wrap 'exit 3')
    wait_state "$id" FAILED 20 && scontrol show job "$id" | grep -q 'ExitCode=3:0' \
        && ok "exit 3 -> FAILED ExitCode=3:0" || bad "failed job $id"

    # 4. slurmctld restart: a running job survives and completes (state in StateSaveLocation)
    id=$(sbatch --parsable -o "$out/%j.out" --wrap 'sleep 4; echo survived')
    wait_state "$id" RUNNING 10 || true
    stop_pidfile "$D/run/slurmctld.pid" slurmctld
    slurmctld -f "$SLURM_CONF"
    wait_for 30 slurmctld scontrol ping
    wait_state "$id" COMPLETED 30 && grep -q survived "$out/$id.out" \
        && ok "job $id survived a slurmctld restart" || bad "job across slurmctld restart"

    # 5. slow checks (about 3 min), SLURM_LOCAL_SMOKE_SLOW=1:
    #    --time=1 -> TIMEOUT; scontrol requeue -> the same job runs a second time
    if [ "${SLURM_LOCAL_SMOKE_SLOW:-0}" = 1 ]; then
        local r
        id=$(sbatch --parsable -o /dev/null --time=1 --wrap 'sleep 600')
        r=$(sbatch --parsable -o "$out/%j.out" --open-mode=append \
            --wrap 'echo run restart_count=${SLURM_RESTART_COUNT:-0}; sleep 3')
        wait_state "$r" RUNNING 10 && scontrol requeue "$r" \
            && ok "requeued running job $r (EligibleTime pushed ~2 min out)" || bad "requeue $r"
        wait_state "$id" TIMEOUT 150 && ok "--time=1 job $id -> TIMEOUT" || bad "timeout job $id"
        wait_state "$r" COMPLETED 240 && [ "$(grep -c '^run ' "$out/$r.out")" = 2 ] \
            && ok "requeued job $r ran twice (at-least-once): $(grep '^run ' "$out/$r.out" | tr '\n' ' ')" \
            || bad "requeued job $r: $(cat "$out/$r.out" 2>/dev/null | tr '\n' ' ')"
        log "     jobcomp lines for $r: $(sacct -c -j "$r" -n -P -o State | tr '\n' ' ')"
    fi

    # 6. fake GPUs: --gres=gpu:2 gets two devices, a third 2-GPU job waits on Resources
    if [ "$GPUS" -ge 4 ]; then
        local a b c
        a=$(sbatch --parsable -o "$out/%j.out" --gres=gpu:2 --wrap 'echo CVD=$CUDA_VISIBLE_DEVICES JG=$SLURM_JOB_GPUS; sleep 5')
        b=$(sbatch --parsable -o "$out/%j.out" --gres=gpu:2 --wrap 'echo CVD=$CUDA_VISIBLE_DEVICES JG=$SLURM_JOB_GPUS; sleep 5')
        c=$(sbatch --parsable -o "$out/%j.out" --gres=gpu:2 --wrap 'echo CVD=$CUDA_VISIBLE_DEVICES JG=$SLURM_JOB_GPUS')
        if wait_state "$a" RUNNING 10 && wait_state "$b" RUNNING 10 \
            && [ "$(job_state "$c")" = PENDING ] \
            && scontrol show job "$c" | grep -q 'Reason=Resources'; then
            ok "gres: 2+2 fake GPUs running, third 2-GPU job PENDING (Resources)"
        else bad "gres scheduling: $a=$(job_state "$a") $b=$(job_state "$b") $c=$(job_state "$c")"; fi
        wait_state "$c" COMPLETED 30 || true
        log "     gres env: $(cat "$out/$a.out" "$out/$b.out" "$out/$c.out" | tr '\n' ' ')"
        id=$(sbatch --parsable -o /dev/null --gres=gpu:5 --wrap true 2>&1) \
            && bad "gpu:5 on a 4-GPU node was accepted ($id)" \
            || ok "gpu:5 rejected at submit: ${id##*: }"
    fi

    # 7. slurmrestd: JWT from scontrol token, POST a job, GET it back
    if pid_alive "$D/run/slurmrestd.pid"; then
        tok=$(scontrol token username=root lifespan=600 | sed 's/^SLURM_JWT=//')
        local base="http://127.0.0.1:$REST_PORT/slurm/v0.0.38"
        local -a H=(-H "X-SLURM-USER-NAME: root" -H "X-SLURM-USER-TOKEN: $tok" -H 'Content-Type: application/json')
        code=$(curl -s -o "$out/ping.json" -w '%{http_code}' "${H[@]}" "$base/ping")
        [ "$code" = 200 ] && ok "REST GET /ping 200" || bad "REST ping http $code"
        code=$(curl -s -o "$out/submit.json" -w '%{http_code}' "${H[@]}" -X POST "$base/job/submit" -d @- <<EOF
{"job": {"name": "rest-smoke", "partition": "local", "current_working_directory": "$out",
         "standard_output": "$out/rest-%j.out", "environment": {"PATH": "/usr/bin:/bin"},
         "time_limit": 5},
 "script": "#!/bin/sh\necho rest job \$SLURM_JOB_ID\n"}
EOF
)
        id=$(sed -n 's/.*"job_id": *\([0-9]*\).*/\1/p' "$out/submit.json" | head -1)
        if [ "$code" = 200 ] && [ -n "$id" ] && wait_state "$id" COMPLETED 20; then
            ok "REST POST /job/submit -> job $id COMPLETED"
            code=$(curl -s -o "$out/job.json" -w '%{http_code}' "${H[@]}" "$base/job/$id")
            grep -q '"job_state": *"COMPLETED"' "$out/job.json" && ok "REST GET /job/$id: COMPLETED" \
                || bad "REST GET job http $code"
        else bad "REST submit http $code: $(head -c 400 "$out/submit.json")"; fi
        code=$(curl -s -o /dev/null -w '%{http_code}' "$base/ping")
        [ "$code" = 401 ] && ok "REST without token -> 401" || log "note REST without token -> $code"
    fi
    if pid_alive "$D/run/slurmrestd-local.pid"; then
        local sock="$D/rest/slurmrestd.sock"
        code=$(curl -s -o "$out/submit-local.json" -w '%{http_code}' --unix-socket "$sock" \
            -H 'Content-Type: application/json' -X POST http://localhost/slurm/v0.0.38/job/submit -d @- <<EOF
{"job": {"name": "rest-local-smoke", "partition": "local", "current_working_directory": "/tmp",
         "standard_output": "/dev/null", "environment": {"PATH": "/usr/bin:/bin"}},
 "script": "#!/bin/sh\ntrue\n"}
EOF
)
        id=$(sed -n 's/.*"job_id": *\([0-9]*\).*/\1/p' "$out/submit-local.json" | head -1)
        if [ "$code" = 200 ] && [ -n "$id" ] && wait_state "$id" COMPLETED 20; then
            ok "REST unix socket, local auth: job $id COMPLETED as $(scontrol show job "$id" | grep -o 'UserId=[^ ]*')"
        else bad "REST local-auth submit http $code: $(head -c 300 "$out/submit-local.json")"; fi
    fi
    [ $fail = 0 ] && log "smoke: all passed" || log "smoke: FAILED"
    return $fail
}

cmd_bench() {
    local n=${1:-200} i t0 t1 t2 id first last
    local out="$D/bench"; mkdir -p "$out"
    # latency: submit -> RUNNING, on an idle cluster (5 samples)
    for i in 1 2 3 4 5; do
        t0=$(date +%s.%N)
        first=$(sbatch --parsable -o /dev/null --wrap 'sleep 2')
        wait_state "$first" RUNNING 20 || return 1
        t1=$(date +%s.%N)
        echo "latency sbatch->RUNNING: $(calc "$t1 - $t0") s"
        wait_state "$first" COMPLETED 30 >/dev/null
    done
    # throughput: N trivial jobs
    t0=$(date +%s.%N)
    for ((i = 0; i < n; i++)); do
        id=$(sbatch --parsable -o /dev/null --wrap true)
        [ $i = 0 ] && first=$id
    done
    last=$id
    t1=$(date +%s.%N)
    drain 900 || return 1
    t2=$(date +%s.%N)
    local done_n
    done_n=$(awk -v a="$first" -v b="$last" '{for(i=1;i<=NF;i++) if ($i ~ /^JobId=/) {split($i,x,"="); j=x[2]} } j>=a && j<=b && /JobState=COMPLETED/ {c++} END{print c+0}' "$D/log/jobcomp.txt")
    echo "submitted $n jobs in $(calc "$t1 - $t0") s ($(calc "$n / ($t1 - $t0)") jobs/s);" \
        "all finished after $(calc "$t2 - $t0") s ($(calc "$n / ($t2 - $t0)") jobs/s);" \
        "COMPLETED in jobcomp: $done_n (node CPUs=$CPUS)"
    # REST: N/2 submits over loopback with a JWT, one curl process each
    if pid_alive "$D/run/slurmrestd.pid"; then
        local tok m=$((n / 2)) codes
        tok=$(scontrol token username=root lifespan=600 | sed 's/^SLURM_JWT=//')
        t0=$(date +%s.%N)
        codes=$(for ((i = 0; i < m; i++)); do
            curl -s -o /dev/null -w '%{http_code}\n' -H "X-SLURM-USER-NAME: root" \
                -H "X-SLURM-USER-TOKEN: $tok" -H 'Content-Type: application/json' \
                -X POST "http://127.0.0.1:$REST_PORT/slurm/v0.0.38/job/submit" \
                -d '{"job":{"partition":"local","current_working_directory":"/tmp","standard_output":"/dev/null","environment":{"PATH":"/usr/bin:/bin"}},"script":"#!/bin/sh\ntrue\n"}'
        done | sort | uniq -c | tr -s ' \n' ' ')
        t1=$(date +%s.%N)
        echo "REST: $m submits in $(calc "$t1 - $t0") s ($(calc "$m / ($t1 - $t0)") jobs/s); http codes:$codes"
        drain 900 || return 1
    fi
}

case "${1:-}" in
    up|down|clean|install) [ "$(id -u)" = 0 ] || die "run as root (SlurmUser=root, mknod, apt)" ;;
esac
case "${1:-}" in
    install) cmd_install ;;
    up) cmd_up ;;
    down) cmd_down ;;
    clean) cmd_clean ;;
    env) cmd_env ;;
    status) cmd_status ;;
    smoke) cmd_smoke ;;
    bench) shift; cmd_bench "$@" ;;
    *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
