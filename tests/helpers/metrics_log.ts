/**
 * Lines of a proxy's metrics.log as the real proxy writes them (src/proxy/metrics.ts's
 * ProxyMetrics and takeMinute), for tests of what the fleet makes of them.
 */
import { ProxyMetrics } from "../../src/proxy/metrics.ts";

/**
 * `minutes` minutes of `app`'s traffic from `start` (epoch ms, a whole minute): 20 requests a
 * minute, all answered 200 but for one slow one, until `failingFrom` (a minute index) from which
 * half answer 500. One JSON line per minute, stamped at the minute's end.
 */
export function metricsLogLines(app: string, start: number, minutes: number, failingFrom: number): string[] {
  let t = start;
  const proxy = new ProxyMetrics({ now: () => t });
  const lines: string[] = [];
  for (let minute = 0; minute < minutes; minute++) {
    t = start + minute * 60_000;
    for (let i = 0; i < 20; i++) {
      const end = proxy.begin(app, "blue");
      t += i < 19 ? 1 : 300;
      end(minute >= failingFrom && i % 2 ? 500 : 200, 10, 100);
    }
    lines.push(...proxy.takeMinute(start + (minute + 1) * 60_000).map((line) => JSON.stringify(line)));
  }
  return lines;
}
