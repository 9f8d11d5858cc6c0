// Checks Flux scripts with InfluxData's own Flux parser and type checker
// (@influxdata/flux-lsp-node, the WebAssembly build of flux-lsp).
//
// Input (stdin): a JSON array of {"name": string, "query": string}. The
// queries must already have Grafana's macros and dashboard variables
// substituted; this script knows nothing about Grafana.
// Output (stdout): a JSON array of {"name", "valid", "errors": [{"line",
// "column", "message"}]} in input order. Exit status 0 when every query is
// valid, 1 when any is not, 2 on a usage error.
//
// Two verdicts are combined because each sees something the other does not:
// is_valid_flux() runs the full semantic analysis (unknown functions, wrong
// argument names and types) but says nothing about where; the language
// server's diagnostics give positions and messages, and the parser's AST
// carries the syntax errors, whose LSP message is often empty.

import { createRequire } from 'node:module';

// The WebAssembly module logs through console.log/info; stdout carries the
// JSON result alone.
for (const level of ['log', 'info', 'debug', 'warn']) {
  console[level] = (...args) => process.stderr.write(args.join(' ') + '\n');
}

const require = createRequire(import.meta.url);
const flux = require('@influxdata/flux-lsp-node');

const DIAGNOSTICS_TIMEOUT_MS = 10_000;
const SEVERITY_ERROR = 1;

function syntaxErrors(script) {
  const found = [];
  const walk = (node) => {
    if (Array.isArray(node)) {
      node.forEach(walk);
      return;
    }
    if (node === null || typeof node !== 'object') {
      return;
    }
    if (Array.isArray(node.errors) && node.errors.length > 0) {
      const start = node.location?.start ?? { line: 0, column: 0 };
      for (const err of node.errors) {
        found.push({
          line: start.line,
          column: start.column,
          message: `syntax error near ${JSON.stringify(node.location?.source ?? '')}${err.msg ? ': ' + err.msg : ''}`,
        });
      }
    }
    for (const key of Object.keys(node)) {
      if (key !== 'location') {
        walk(node[key]);
      }
    }
  };
  walk(flux.parse(script));
  return found;
}

class LanguageServer {
  constructor() {
    this.lsp = new flux.Lsp();
    this.waiting = new Map();
    this.lsp.onMessage((raw) => {
      const msg = JSON.parse(raw);
      if (msg.method !== 'textDocument/publishDiagnostics') {
        return;
      }
      // The server re-publishes (often empty) diagnostics for documents it
      // already reported on; only the first report after opening counts.
      const resolve = this.waiting.get(msg.params.uri);
      if (resolve) {
        this.waiting.delete(msg.params.uri);
        resolve(msg.params.diagnostics);
      }
    });
    this.running = this.lsp.run();
    this.running.catch((err) => {
      process.stderr.write(`flux language server stopped: ${err}\n`);
    });
    this.nextId = 1;
  }

  async request(method, params) {
    return this.lsp.send(JSON.stringify({ jsonrpc: '2.0', id: this.nextId++, method, params }));
  }

  async notify(method, params) {
    return this.lsp.send(JSON.stringify({ jsonrpc: '2.0', method, params }));
  }

  async start() {
    await this.request('initialize', { processId: null, rootUri: null, capabilities: {} });
    await this.notify('initialized', {});
  }

  async diagnose(index, script) {
    const uri = `file:///query-${index}.flux`;
    const reported = new Promise((resolve, reject) => {
      this.waiting.set(uri, resolve);
      setTimeout(() => reject(new Error(`no diagnostics for ${uri} within ${DIAGNOSTICS_TIMEOUT_MS} ms`)), DIAGNOSTICS_TIMEOUT_MS).unref();
    });
    await this.notify('textDocument/didOpen', {
      textDocument: { uri, languageId: 'flux', version: 1, text: script },
    });
    const diagnostics = await reported;
    await this.notify('textDocument/didClose', { textDocument: { uri } });
    return diagnostics
      .filter((d) => d.severity === SEVERITY_ERROR)
      .map((d) => ({
        line: d.range.start.line + 1,
        column: d.range.start.character + 1,
        message: d.message,
      }));
  }
}

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) {
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function main() {
  let items;
  try {
    items = JSON.parse(await readStdin());
  } catch (err) {
    process.stderr.write(`check-flux: stdin is not JSON: ${err.message}\n`);
    return 2;
  }
  if (!Array.isArray(items) || !items.every((i) => typeof i?.name === 'string' && typeof i?.query === 'string')) {
    process.stderr.write('check-flux: expected a JSON array of {"name": string, "query": string}\n');
    return 2;
  }
  const server = new LanguageServer();
  await server.start();
  const results = [];
  for (const [index, item] of items.entries()) {
    const syntax = syntaxErrors(item.query);
    // The server reports syntax errors with an empty message; the parser's
    // own entries above say more.
    const diagnosed = (await server.diagnose(index, item.query)).filter((e) => e.message || syntax.length === 0);
    const errors = [...syntax, ...diagnosed.map((e) => ({ ...e, message: e.message || 'error without a message' }))];
    const semanticallyValid = flux.is_valid_flux(item.query);
    if (!semanticallyValid && errors.length === 0) {
      errors.push({ line: 0, column: 0, message: 'rejected by the Flux semantic check (is_valid_flux)' });
    }
    results.push({ name: item.name, valid: semanticallyValid && errors.length === 0, errors });
  }
  process.stdout.write(JSON.stringify(results, null, 2) + '\n');
  return results.every((r) => r.valid) ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`check-flux: ${err.stack ?? err}\n`);
    process.exit(2);
  },
);
