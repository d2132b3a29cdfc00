// k6 load test of POST /recommend with an open workload model (requests arrive at a fixed rate, or a ramp,
// whatever the latency: a slow server is not given a slower arrival rate, unlike a closed loop of users).
//
// Bodies come from the request file (python -m loadtests.requests); each iteration takes the next one, so a
// run can replay a small warmed pool (POOL > 0) or never repeat a request (POOL = 0, uncached).
// Tags: every request carries ranker and scenario tags; the server's x-total-time header (milliseconds) goes into
// the trend server_total_time. Thresholds: no error other than a deliberate 429, and a p99 bound per ranker.
//
//   k6 run --no-usage-report -e REQUESTS=artifacts/loadtest/requests-ml-100k.json -e RANKERS=popular \
//          -e RATE=20 -e DURATION=30s loadtests/recommend.js
//
// With EXECUTOR=users the model is closed instead: USERS virtual users each send their next request when the last
// one is answered, ITERATIONS requests in all (USERS=1: one request at a time, the single-request latency).
//
// Environment: BASE_URL (http://127.0.0.1:8000), REQUESTS (required; absolute, or relative to this script), RANKERS
// (comma list, taken in turn: popular), SCENARIO (tag; default the ranker list), EXECUTOR (constant | ramping |
// users), RATE (requests/s, may be fractional), DURATION (30s), RAMP (ramping: time to reach RATE, 10s), USERS and
// ITERATIONS (users), OFFSET (first request used, 0), POOL
// (requests cycled, 0 = all new), REASONING_TOKENS (max_reasoning_tokens sent), HTTP_TIMEOUT (120s),
// GRACEFUL_STOP (how long in-flight requests may finish after the run, 130s), P99_MS (threshold, 1000),
// PRE_VUS (virtual users started up front, 2 x RATE), MAX_VUS (300), SUMMARY (path of the JSON summary written).
import http from 'k6/http';
import exec from 'k6/execution';
import { SharedArray } from 'k6/data';
import { Rate, Trend } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8000';
const RANKERS = (__ENV.RANKERS || 'popular').split(',').map((r) => r.trim()).filter((r) => r);
const SCENARIO = __ENV.SCENARIO || RANKERS.join('+');
const RATE = Number(__ENV.RATE || 10);
const DURATION = __ENV.DURATION || '30s';
const OFFSET = Number(__ENV.OFFSET || 0);
const POOL = Number(__ENV.POOL || 0);
const TOKENS = __ENV.REASONING_TOKENS ? Number(__ENV.REASONING_TOKENS) : null;
const P99_MS = Number(__ENV.P99_MS || 1000);
const MAX_VUS = Number(__ENV.MAX_VUS || 300);
// Virtual users are started up front, so no arrival waits for one: rate x the slowest expected answer.
const PRE_VUS = Math.min(MAX_VUS, Number(__ENV.PRE_VUS || Math.max(2, Math.ceil(RATE * 2))));

const requests = new SharedArray('requests', () => JSON.parse(open(__ENV.REQUESTS)));

const serverTime = new Trend('server_total_time', true); // x-total-time of 200 answers
const clientTime = new Trend('client_time', true); // what the client saw, 200 answers
const fallback = new Rate('fallback'); // 200 answers given by the fallback ranker
const cached = new Rate('cached'); // 200 answers from the cache
const rejected = new Rate('rejected'); // 429: over the in-flight limit
const unexpected = new Rate('unexpected_errors'); // anything else than 200 or 429

// Arrivals per timeUnit must be an integer: express fractional rates per 100 s.
const PER_100S = Math.max(1, Math.round(RATE * 100));

function executor() {
  const common = {
    timeUnit: '100s', preAllocatedVUs: PRE_VUS, maxVUs: MAX_VUS,
    gracefulStop: __ENV.GRACEFUL_STOP || '130s', tags: { scenario_kind: SCENARIO },
  };
  if (__ENV.EXECUTOR === 'users') {
    return {
      executor: 'shared-iterations', vus: Number(__ENV.USERS || 1), iterations: Number(__ENV.ITERATIONS || 10),
      maxDuration: __ENV.MAX_DURATION || '30m', gracefulStop: common.gracefulStop, tags: common.tags,
    };
  }
  if ((__ENV.EXECUTOR || 'constant') === 'ramping') {
    return Object.assign(common, {
      executor: 'ramping-arrival-rate', startRate: 0,
      stages: [{ target: PER_100S, duration: __ENV.RAMP || '10s' }, { target: PER_100S, duration: DURATION }],
    });
  }
  return Object.assign(common, { executor: 'constant-arrival-rate', rate: PER_100S, duration: DURATION });
}

const thresholds = { unexpected_errors: ['rate==0'] };
for (const ranker of RANKERS) {
  thresholds[`server_total_time{ranker:${ranker}}`] = [`p(99)<${P99_MS}`];
}

export const options = {
  scenarios: { recommend: executor() },
  thresholds,
  summaryTrendStats: ['avg', 'min', 'med', 'p(90)', 'p(95)', 'p(99)', 'max', 'count'],
  discardResponseBodies: false,
};

export default function () {
  const i = exec.scenario.iterationInTest;
  const index = OFFSET + (POOL > 0 ? i % POOL : i);
  const ranker = RANKERS[i % RANKERS.length];
  const body = Object.assign({}, requests[index % requests.length], { ranker });
  if (TOKENS !== null && ranker === 'reasoning') {
    body.max_reasoning_tokens = TOKENS;
  }
  const tags = { ranker, scenario_kind: SCENARIO };
  const res = http.post(`${BASE_URL}/recommend`, JSON.stringify(body), {
    headers: { 'Content-Type': 'application/json' },
    timeout: __ENV.HTTP_TIMEOUT || '120s',
    tags,
    responseCallback: http.expectedStatuses(200, 429),
  });
  rejected.add(res.status === 429, tags);
  unexpected.add(res.status !== 200 && res.status !== 429, tags);
  if (res.status !== 200) {
    return;
  }
  serverTime.add(Number(res.headers['X-Total-Time']), tags);
  clientTime.add(res.timings.duration, tags);
  const answer = res.json();
  fallback.add(answer.fallback !== null, tags);
  cached.add(answer.cached === true, tags);
}

export function handleSummary(data) {
  const line = `${SCENARIO} at ${RATE}/s: ${JSON.stringify(data.metrics.server_total_time ? data.metrics.server_total_time.values : {})}\n`;
  const out = { stdout: line };
  if (__ENV.SUMMARY) {
    out[__ENV.SUMMARY] = JSON.stringify(data, null, 1);
  }
  return out;
}
