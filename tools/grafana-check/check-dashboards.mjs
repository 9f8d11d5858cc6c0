// Type-checks Grafana dashboard JSON files against Grafana's own schema types.
//
// Usage: node check-dashboards.mjs DASHBOARD.json|DIRECTORY...
//
// Each dashboard becomes a TypeScript module that assigns the JSON, as an
// object literal, to a constant of type StrictDashboard (dashboard-types.ts);
// the TypeScript compiler then reports wrong value types, missing required
// options and unknown properties. Errors are printed as
// `path/to/dashboard.json:LINE: message` against the JSON as re-indented with
// two spaces (the layout the dashboards are committed in). Exit status 0 when
// every dashboard checks, 1 when any does not, 2 on a usage error.

import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { basename, dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { defaultDashboard } from '@grafana/schema';

const HERE = dirname(fileURLToPath(import.meta.url));
// Inside this package so that `@grafana/schema` resolves from node_modules.
const BUILD_DIR = join(HERE, 'build');
const HEADER = [
  "import type { StrictDashboard } from '../../dashboard-types';",
  '',
  'export const dashboard: StrictDashboard = ',
];

function dashboardFiles(args) {
  const files = [];
  for (const arg of args) {
    const path = resolve(arg);
    if (statSync(path).isDirectory()) {
      for (const name of readdirSync(path).sort()) {
        if (name.endsWith('.json')) {
          files.push(join(path, name));
        }
      }
    } else {
      files.push(path);
    }
  }
  return files;
}

function compilerOptions() {
  const configPath = join(HERE, 'tsconfig.json');
  const read = ts.readConfigFile(configPath, ts.sys.readFile);
  if (read.error) {
    throw new Error(ts.flattenDiagnosticMessageText(read.error.messageText, '\n'));
  }
  return ts.parseJsonConfigFileContent(read.config, ts.sys, HERE).options;
}

function main(args) {
  if (args.length === 0) {
    process.stderr.write('usage: node check-dashboards.mjs DASHBOARD.json|DIRECTORY...\n');
    return 2;
  }
  const files = dashboardFiles(args);
  if (files.length === 0) {
    process.stderr.write(`check-dashboards: no .json files in ${args.join(' ')}\n`);
    return 2;
  }
  mkdirSync(BUILD_DIR, { recursive: true });
  const workDir = mkdtempSync(join(BUILD_DIR, 'check-'));
  try {
    return check(files, workDir);
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
}

function check(files, workDir) {
  const problems = [];
  const sourceOf = new Map();
  files.forEach((file, index) => {
    let parsed;
    try {
      parsed = JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      problems.push(`${relative(process.cwd(), file)}:0: not valid JSON: ${err.message}`);
      return;
    }
    if (parsed.schemaVersion !== defaultDashboard.schemaVersion) {
      problems.push(
        `${relative(process.cwd(), file)}:0: schemaVersion is ${parsed.schemaVersion}, ` +
          `the pinned Grafana's is ${defaultDashboard.schemaVersion}`,
      );
    }
    const tsFile = join(workDir, `${index}-${basename(file, '.json')}.ts`);
    writeFileSync(tsFile, HEADER.join('\n') + JSON.stringify(parsed, null, 2) + ';\n');
    sourceOf.set(tsFile, file);
  });

  const program = ts.createProgram([...sourceOf.keys()], compilerOptions());
  const headerLines = HEADER.length - 1;
  for (const diag of ts.getPreEmitDiagnostics(program)) {
    const message = ts.flattenDiagnosticMessageText(diag.messageText, '\n  ');
    if (!diag.file) {
      problems.push(`typescript: error TS${diag.code}: ${message}`);
      continue;
    }
    const jsonFile = sourceOf.get(resolve(diag.file.fileName));
    const { line } = diag.file.getLineAndCharacterOfPosition(diag.start ?? 0);
    const where = jsonFile
      ? `${relative(process.cwd(), jsonFile)}:${line + 1 - headerLines}`
      : `${diag.file.fileName}:${line + 1}`;
    problems.push(`${where}: error TS${diag.code}: ${message}`);
  }

  for (const problem of problems) {
    process.stdout.write(problem + '\n');
  }
  process.stdout.write(
    `check-dashboards: ${files.length} dashboard(s), ${problems.length} problem(s)\n`,
  );
  return problems.length === 0 ? 0 : 1;
}

process.exit(main(process.argv.slice(2)));
