"use strict";
// Log-bucketed latency histogram (1% wide buckets, microseconds), mergeable
// across worker processes by adding the count arrays.
const GROWTH = 1.01;
const LOG_G = Math.log(GROWTH);
const NBUCKETS = 2000; // 1.01^2000 us ~ 440 s: covers any bounded run

function newHist() {
  return new Float64Array(NBUCKETS);
}

function record(h, us) {
  let i = 0;
  if (us >= 1) {
    i = Math.floor(Math.log(us) / LOG_G) + 1;
    if (i >= NBUCKETS) i = NBUCKETS - 1;
  }
  h[i] += 1;
}

// Value representing bucket i (geometric middle), in microseconds.
function bucketValue(i) {
  if (i === 0) return 0.5;
  return Math.exp((i - 0.5) * LOG_G);
}

function summarize(counts) {
  let n = 0;
  let sum = 0;
  let maxI = -1;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i];
    if (c) {
      n += c;
      sum += c * bucketValue(i);
      maxI = i;
    }
  }
  const out = { count: n };
  if (!n) return out;
  const qs = [["p50", 0.5], ["p90", 0.9], ["p95", 0.95], ["p99", 0.99], ["p999", 0.999]];
  let acc = 0;
  let q = 0;
  for (let i = 0; i < counts.length && q < qs.length; i++) {
    acc += counts[i];
    while (q < qs.length && acc >= qs[q][1] * n) {
      out[qs[q][0] + "_ms"] = bucketValue(i) / 1000;
      q++;
    }
  }
  out.mean_ms = sum / n / 1000;
  out.max_ms = bucketValue(maxI) / 1000;
  return out;
}

module.exports = { newHist, record, summarize, NBUCKETS };
