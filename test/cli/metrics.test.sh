# The broker's /metrics passes `promtool check metrics`, and the Grafana dashboard
# (packaging/grafana/lmx-dashboard.json) is valid and queries only metrics /metrics has.
#   LMX_BINARY=build/release/apps/lmx/lmx bash test/cli/metrics.test.sh
#   DASHBOARD=/tmp/other.json LMX_BINARY=... bash test/cli/metrics.test.sh   # another dashboard
source "$(dirname "$0")/lib.sh"
DASHBOARD=${DASHBOARD:-$(dirname "$0")/../../packaging/grafana/lmx-dashboard.json}
[[ -s $DASHBOARD ]] || fail "no dashboard at $DASHBOARD"
command -v promtool >/dev/null || fail "promtool not found (Debian's prometheus package; scripts/deps.sh test)"
command -v node >/dev/null || fail "node not found (scripts/deps.sh test)"

# get URL: the body of a 200 answer, with node's fetch (the test tools need no curl).
get() {
  node -e 'fetch(process.argv[1]).then(async (r) => {
    if (!r.ok) throw new Error(`HTTP ${r.status} for ${process.argv[1]}`);
    process.stdout.write(await r.text());
  }).catch((e) => { console.error(e.message); process.exit(1); });' "$1"
}

# lint_metrics FILE: promtool's complaints about the exposition in FILE; fails on any output or
# a nonzero exit (promtool writes lint problems to stderr and exits 3 for them).
lint_metrics() {
  local rc=0 said
  said=$(promtool check metrics <"$1" 2>&1) || rc=$?
  [[ $rc == 0 && -z $said ]] || { echo "promtool check metrics exited $rc:"; echo "$said"; return 1; }
}

# The dashboard checks, in node (no jq): `node dashboard.js names DASHBOARD METRICS` names each
# metric an expr (or a variable's query) uses that METRICS lacks; `node dashboard.js shape
# DASHBOARD` checks the JSON itself. Each prints one problem a line and exits 1 if there is any.
cat >"$T/dashboard.js" <<'EOF'
const fs = require("fs");
const [mode, dashboardFile, metricsFile] = process.argv.slice(2);
const problems = [];
let d;
try {
  d = JSON.parse(fs.readFileSync(dashboardFile, "utf8"));
} catch (e) {
  console.log(`${dashboardFile}: not valid JSON: ${e.message}`);
  process.exit(1);
}
// Every panel, those inside collapsed rows too.
const all = [];
const walk = (list) => { for (const p of list || []) { all.push(p); walk(p.panels); } };
walk(d.panels);
const panelName = (p) => `panel ${p.id} "${p.title}"`;
const vars = (d.templating && d.templating.list) || [];

if (mode === "shape") {
  if (!Array.isArray(d.panels) || d.panels.length === 0) problems.push("no panels");
  if (typeof d.schemaVersion !== "number") problems.push("no schemaVersion");
  if (!d.title || !d.uid) problems.push("no title or uid");
  const dsVars = vars.filter((v) => v.type === "datasource" && v.query === "prometheus").map((v) => v.name);
  if (dsVars.length === 0) problems.push('no template variable of type "datasource" with query "prometheus"');
  const isVar = (ds) => ds && typeof ds === "object" && ds.type === "prometheus" &&
    dsVars.some((n) => ds.uid === "${" + n + "}" || ds.uid === "$" + n);
  const seen = new Map();
  for (const p of all) {
    if (!Number.isInteger(p.id)) problems.push(`${panelName(p)}: no integer id`);
    else if (seen.has(p.id)) problems.push(`${panelName(p)}: id ${p.id} is also "${seen.get(p.id)}"`);
    else seen.set(p.id, p.title);
    if (!p.gridPos) problems.push(`${panelName(p)}: no gridPos`);
    if (p.type === "row") continue;
    if (!isVar(p.datasource)) problems.push(`${panelName(p)}: datasource ${JSON.stringify(p.datasource)} is not the datasource variable`);
    if (!Array.isArray(p.targets) || p.targets.length === 0) problems.push(`${panelName(p)}: no targets`);
    for (const t of p.targets || []) {
      if (t.datasource !== undefined && !isVar(t.datasource)) problems.push(`${panelName(p)} target ${t.refId}: datasource ${JSON.stringify(t.datasource)} is not the datasource variable`);
      if (typeof t.expr !== "string" || !t.expr.trim()) problems.push(`${panelName(p)} target ${t.refId}: empty expr`);
    }
  }
  for (const v of vars) {
    if (v.type === "query" && !isVar(v.datasource)) problems.push(`variable ${v.name}: datasource ${JSON.stringify(v.datasource)} is not the datasource variable`);
  }
} else if (mode === "names") {
  // The exposition: each family's type (from # TYPE) and each sample's name.
  const types = new Map();
  const samples = new Set();
  for (const line of fs.readFileSync(metricsFile, "utf8").split("\n")) {
    const t = line.match(/^# TYPE (\S+) (\S+)/);
    if (t) types.set(t[1], t[2]);
    else if (line && !line.startsWith("#")) samples.add(line.match(/^[^{\s]+/)[0]);
  }
  const keywords = new Set(["by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "atan2", "inf", "nan"]);
  // The metric names of a PromQL expression: strings, label matchers, ranges, grouping clauses and
  // Grafana variables go; what is left that names no function is a metric.
  const metricNames = (where, expr) => {
    let e = expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""')
      .replace(/\{[^}]*\}/g, " ")
      .replace(/\[[^\]]*\]/g, " ")
      .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/gi, " ")
      .replace(/\blabel_values\s*\(\s*([A-Za-z_:][\w:]*)\s*,[^)]*\)/g, " $1 ")   // Grafana's label_values(metric, label)
      .replace(/\blabel_values\s*\([^,)]*\)/g, " ")                               // label_values(label)
      .replace(/\$\{[^}]*\}|\$\w+/g, " ");
    const names = [];
    for (const m of e.matchAll(/[A-Za-z_:][\w:]*/g)) {
      const before = e[m.index - 1] || " ";
      if (/[\d.]/.test(before)) continue;                          // 1e3, 5m
      if (/^\s*\(/.test(e.slice(m.index + m[0].length))) continue;  // a function
      if (keywords.has(m[0].toLowerCase())) continue;
      names.push(m[0]);
    }
    // Counters only in rate(), irate() and increase(), and nothing else there.
    for (const m of e.matchAll(/\b(rate|irate|increase)\s*\(\s*([A-Za-z_:][\w:]*)/g)) {
      const family = family_of(m[2]);
      const type = family && types.get(family);
      if (type && type !== "counter" && !(family !== m[2] && (type === "histogram" || type === "summary")))
        problems.push(`${where}: ${m[1]}() of ${m[2]}, a ${type}: ${expr}`);
    }
    return names;
  };
  // x_bucket (histogram), x_sum and x_count (histogram, summary) stand for their family x.
  const family_of = (name) => {
    const m = name.match(/^(.*)_(bucket|sum|count)$/);
    if (m && (types.get(m[1]) === "histogram" || (m[2] !== "bucket" && types.get(m[1]) === "summary"))) return m[1];
    return types.has(name) ? name : undefined;
  };
  const check = (where, expr) => {
    const names = metricNames(where, expr);
    if (names.length === 0) problems.push(`${where}: no metric in: ${expr}`);
    for (const n of names) {
      const family = family_of(n);
      if (family === undefined && !samples.has(n)) problems.push(`${where}: ${n} is not in /metrics: ${expr}`);
      else if (family === n && types.get(n) === "histogram") problems.push(`${where}: ${n} is a histogram; query ${n}_bucket, _sum or _count: ${expr}`);
    }
  };
  for (const p of all) for (const t of p.targets || []) if (typeof t.expr === "string") check(`${panelName(p)} target ${t.refId}`, t.expr);
  for (const v of vars) {
    if (v.type !== "query") continue;
    const q = typeof v.query === "string" ? v.query : v.query && v.query.query;
    if (q) check(`variable ${v.name}`, q);
  }
}
for (const p of problems) console.log(p);
process.exit(problems.length ? 1 : 0);
EOF

# The checks find what they look for: a lint problem, a metric /metrics lacks, a rate of a gauge.
printf '# TYPE lmx_bogus counter\nlmx_bogus 1\n' >"$T/bad.prom"
if said=$(lint_metrics "$T/bad.prom"); then fail "promtool passed an exposition without HELP or _total"; fi
contains "$said" "lmx_bogus"
printf '# HELP g A gauge.\n# TYPE g gauge\ng 1\n' >"$T/bogus.prom"
cat >"$T/bogus.json" <<'EOF'
{"panels": [{"id": 1, "title": "t", "targets": [{"refId": "A", "expr": "sum by (le) (rate(no_such_metric{a=\"b\"}[5m])) / rate(g[1m])"}]}]}
EOF
expect 1 node "$T/dashboard.js" names "$T/bogus.json" "$T/bogus.prom"
contains "$OUT" "no_such_metric is not in /metrics"
contains "$OUT" "rate() of g, a gauge"
lacks "$OUT" " le "
expect 1 node "$T/dashboard.js" shape "$T/bogus.json"
contains "$OUT" "is not the datasource variable"
ok "the checks catch lint problems, unknown metrics and a bad dashboard"

# Traffic, so that every counter has moved: grants, a try-lock refused, a queued request timed
# out, a queued request granted after a wait, a lease expired, a forced release, a request
# rejected for a pinned max.
start_broker --key-max pin/=1
expect 0 "$LMX" acquire k --json
id=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' <<<"$OUT")
expect 1 "$LMX" acquire k --no-wait
expect 1 "$LMX" acquire k --timeout 100
spawn "$LMX" run k -- true
wait_for 5 waiters_are k 1
expect 0 "$LMX" release k --id "$id"
wait_jobs
expect 0 "$LMX" acquire lease --ttl 50
expect 0 "$LMX" acquire f
expect 0 "$LMX" release f --force
expect 2 "$LMX" acquire pin/x --max 2 --no-wait
wait_for 5 holders_are lease 0

get "${WS_URL/#ws:/http:}metrics" >"$T/metrics" || fail "GET /metrics"
for m in lmx_up lmx_build_info lmx_grants_total lmx_refused_total lmx_timeouts_total lmx_expirations_total \
  lmx_forced_total lmx_rejected_total lmx_releases_total lmx_connections_total lmx_messages_in_total \
  lmx_messages_out_total lmx_acquire_wait_seconds_count; do
  grep -Eq "^$m(\{[^}]*\})? [1-9]" "$T/metrics" || fail "$m is missing or 0 after the traffic:
$(grep "^$m" "$T/metrics")"
done
ok "/metrics counts the traffic"

said=$(lint_metrics "$T/metrics") || fail "/metrics is not clean: $said"
ok "promtool check metrics finds nothing in /metrics"

expect 0 node "$T/dashboard.js" shape "$DASHBOARD"
ok "the dashboard is valid: panels, unique ids, the datasource variable everywhere"

node "$T/dashboard.js" names "$DASHBOARD" "$T/metrics" >"$T/out" || fail "the dashboard's queries do not fit /metrics:
$(cat "$T/out")"
ok "every metric the dashboard queries is in /metrics"
