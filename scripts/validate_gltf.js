#!/usr/bin/env node
// Validates a glTF 2.0 file (.glb or .gltf) with the Khronos glTF-Validator and prints its JSON report.
//
//   node scripts/validate_gltf.js outputs/.../save/export/model.glb
//
// The validator is the npm package `gltf-validator`, looked up in the project's .node/ folder
// (`make gltf-validator` installs the pinned version there) and then the usual Node paths.
// Exit status: 0 when the report has no errors, 1 when it has, 3 when the validator is missing,
// 2 when the file cannot be read. Warnings, infos and hints are in the report (issues.numWarnings ...).
"use strict";
const fs = require("fs");
const path = require("path");

function loadValidator() {
  const roots = [path.join(__dirname, "..", ".node"), __dirname];
  try {
    return require(require.resolve("gltf-validator", { paths: roots }));
  } catch (e) {
    process.stderr.write(
      "the npm package gltf-validator is not installed: run `make gltf-validator` " +
        "(npm install --prefix .node gltf-validator)\n");
    process.exit(3);
  }
}

async function main() {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write("usage: node scripts/validate_gltf.js <file.glb|file.gltf>\n");
    process.exit(2);
  }
  let bytes;
  try {
    bytes = new Uint8Array(fs.readFileSync(file));
  } catch (e) {
    process.stderr.write(`cannot read ${file}: ${e.message}\n`);
    process.exit(2);
  }
  const validator = loadValidator();
  const folder = path.dirname(file);
  const report = await validator.validateBytes(bytes, {
    uri: path.basename(file),
    maxIssues: 100,
    // a .gltf's buffers and images lie beside it
    externalResourceFunction: (uri) =>
      new Promise((resolve, reject) =>
        fs.readFile(path.join(folder, decodeURIComponent(uri)), (err, data) =>
          err ? reject(err.toString()) : resolve(new Uint8Array(data)))),
  });
  process.stdout.write(JSON.stringify(report, null, 2) + "\n");
  process.exit(report.issues.numErrors > 0 ? 1 : 0);
}

main().catch((e) => {
  process.stderr.write(`validation failed: ${e}\n`);
  process.exit(2);
});
