// What a server's processes use, read from /proc: CPU seconds and memory summed over the process and its
// children (svid-ca's primary and --workers; a Go CA is one process). Shared by bench/run.mjs and bench/compare-go.mjs.
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

function statFields(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}
/** The server's processes: the primary and, with --workers, its worker children. */
export function serverPids(pid) {
  const pids = [pid];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (Number(statFields(entry)[1]) === pid) pids.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return pids;
}
/** User + system CPU seconds of the server's processes (`systemOnly`: the system part alone). */
export function cpuSeconds(pid, systemOnly = false) {
  let total = 0;
  for (const p of serverPids(pid)) {
    try {
      const fields = statFields(p);
      total += ((systemOnly ? 0 : Number(fields[11])) + Number(fields[12])) / CLK_TCK; // utime + stime
    } catch {
      // gone
    }
  }
  return total;
}
/** A /proc/<pid>/status field in KiB (VmRSS, VmHWM, ...), summed over the server's processes (primary + workers). */
export function memoryKiB(pid, key) {
  let total = 0;
  for (const p of serverPids(pid)) {
    try {
      const m = readFileSync(`/proc/${p}/status`, 'utf8').match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'));
      total += m ? Number(m[1]) : 0;
    } catch {
      // gone
    }
  }
  return total;
}

/**
 * Memory the server's processes hold together, counting pages they share once: anonymous memory (heaps,
 * buffers, OpenSSL's per-connection state) summed, plus the largest file-backed share (the node binary and
 * libraries, mapped by every process: a VmRSS sum counts those ~60 MiB once per process, a cgroup once).
 */
export function ownMemoryKiB(pid) {
  let anon = 0;
  let file = 0;
  for (const p of serverPids(pid)) {
    try {
      const status = readFileSync(`/proc/${p}/status`, 'utf8');
      const kib = (key) => Number(status.match(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm'))?.[1] ?? 0);
      anon += kib('RssAnon') + kib('RssShmem');
      file = Math.max(file, kib('RssFile'));
    } catch {
      // gone
    }
  }
  return anon + file;
}
