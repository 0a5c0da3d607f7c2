/**
 * Go-style durations ("90s", "15m", "24h", "1h30m", "2160h"), plus "d" for days, because Istio
 * operators already write them that way. Formatting matches Go's time.Duration.String() so our
 * TTL errors read exactly as istiod's.
 */
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$/;

/** Milliseconds, or undefined when `text` is not a duration. "0" alone is zero, as in Go. */
export function parseDuration(text: string): number | undefined {
  const t = text.trim();
  if (t === '0') return 0;
  if (!DURATION.test(t)) return undefined;
  let total = 0;
  for (const m of t.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d)/g)) total += Number(m[1]) * UNIT_MS[m[2]!]!;
  return Number.isFinite(total) && total <= Number.MAX_SAFE_INTEGER ? Math.round(total) : undefined;
}

/** Go's Duration.String() for whole seconds and up: 3h0m0s, 1m30s, 45s, 0s. */
export function formatGoDuration(ms: number | bigint): string {
  const totalSeconds = typeof ms === 'bigint' ? ms / 1000n : BigInt(Math.floor(ms / 1000));
  if (totalSeconds === 0n) return '0s';
  const neg = totalSeconds < 0n;
  let s = neg ? -totalSeconds : totalSeconds;
  const h = s / 3600n;
  s %= 3600n;
  const m = s / 60n;
  s %= 60n;
  const text = h > 0n ? `${h}h${m}m${s}s` : m > 0n ? `${m}m${s}s` : `${s}s`;
  return neg ? `-${text}` : text;
}
