// Runs the built tidegate Worker on workerd (through Miniflare) with its KV namespaces and
// counter Durable Objects, for scripts/e2e-worker and for local trials.
//
//   node worker/harness.mjs --script crates/tidegate-worker/build/index.js \
//     --config tests/config/core.toml --listen 127.0.0.1:27790 --kv-admin 127.0.0.1:27791 \
//     [--kb faq.kb] [--codes 'SPRING618\nGROUP3'] [--flags-ttl 1] [--var NAME=VALUE ...]
//
// The config file becomes the TIDEGATE_CONFIG variable, as `[vars]` in wrangler.toml does in
// production. `--kv-admin` opens a small loopback API that writes KV the way
// `wrangler kv key put` does in production (the scenario runner's flag backend):
//   PUT /kv/FLAGS/<key>   body = value      GET /kv/FLAGS/<key>      DELETE /kv/FLAGS/<key>
// The process runs until it gets SIGTERM or SIGINT, then disposes of workerd.

import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { dirname, resolve } from "node:path";
import { Miniflare } from "miniflare";

function parseArgs(argv) {
  const out = { vars: {} };
  for (let i = 0; i < argv.length; i += 1) {
    const name = argv[i];
    const value = argv[i + 1];
    if (value === undefined) throw new Error(`${name} needs a value`);
    i += 1;
    switch (name) {
      case "--script": out.script = value; break;
      case "--config": out.config = value; break;
      case "--listen": out.listen = value; break;
      case "--kv-admin": out.kvAdmin = value; break;
      case "--kb": out.kb = value; break;
      case "--codes": out.codes = value.replace(/\\n/g, "\n"); break;
      case "--flags-ttl": out.flagsTtl = value; break;
      case "--var": {
        const eq = value.indexOf("=");
        if (eq < 1) throw new Error(`--var takes NAME=VALUE, got ${value}`);
        out.vars[value.slice(0, eq)] = value.slice(eq + 1);
        break;
      }
      default: throw new Error(`unknown option ${name}`);
    }
  }
  for (const need of ["script", "listen", "kvAdmin"]) {
    if (!out[need]) throw new Error(`--${need.replace(/[A-Z]/g, (c) => "-" + c.toLowerCase())} is required`);
  }
  return out;
}

function hostPort(s) {
  const i = s.lastIndexOf(":");
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

const args = parseArgs(process.argv.slice(2));
const script = resolve(args.script);
const bindings = { ...args.vars };
if (args.config) bindings.TIDEGATE_CONFIG = readFileSync(args.config, "utf8");
if (args.flagsTtl) bindings.FLAGS_CACHE_TTL_SECS = args.flagsTtl;
const { host, port } = hostPort(args.listen);

const mf = new Miniflare({
  modules: true,
  scriptPath: script,
  modulesRoot: dirname(script),
  modulesRules: [
    { type: "ESModule", include: ["**/*.js", "**/*.mjs"] },
    { type: "CompiledWasm", include: ["**/*.wasm"] },
  ],
  compatibilityDate: "2025-09-01",
  kvNamespaces: ["FLAGS", "FAQ"],
  durableObjects: { COUNTERS: { className: "Counter", useSQLite: true } },
  bindings,
  host,
  port,
  cf: { colo: "LOCAL", country: "XX" },
});
await mf.ready;

const kv = {
  FLAGS: await mf.getKVNamespace("FLAGS"),
  FAQ: await mf.getKVNamespace("FAQ"),
};
// KV takes an ArrayBuffer across the Miniflare proxy (a Node Buffer does not serialise).
const arrayBuffer = (b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength);
if (args.kb) await kv.FAQ.put("faq_kb", arrayBuffer(readFileSync(args.kb)));
if (args.codes !== undefined) await kv.FLAGS.put("promo_codes", args.codes);

const admin = createServer(async (req, res) => {
  try {
    const m = /^\/kv\/(FLAGS|FAQ)\/(.+)$/.exec(req.url ?? "");
    if (!m) { res.writeHead(404).end("no such KV path\n"); return; }
    const ns = kv[m[1]];
    const key = decodeURIComponent(m[2]);
    if (req.method === "PUT") {
      const chunks = [];
      for await (const c of req) chunks.push(c);
      await ns.put(key, arrayBuffer(Buffer.concat(chunks)));
      res.writeHead(204).end();
    } else if (req.method === "DELETE") {
      await ns.delete(key);
      res.writeHead(204).end();
    } else {
      const v = await ns.get(key, "arrayBuffer");
      if (v === null) res.writeHead(404).end();
      else res.writeHead(200).end(Buffer.from(v));
    }
  } catch (e) {
    res.writeHead(500).end(String(e));
  }
});
const a = hostPort(args.kvAdmin);
// Printed once KV is seeded and the admin API listens: scripts wait for this line.
admin.listen(a.port, a.host, () =>
  console.log(`ready: tidegate worker on http://${args.listen}, KV admin on http://${args.kvAdmin}`),
);

let stopping = false;
async function stop() {
  if (stopping) return;
  stopping = true;
  admin.close();
  await mf.dispose();
  process.exit(0);
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
