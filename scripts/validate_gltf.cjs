// Validate glTF/GLB files with the Khronos glTF-Validator (npm package `gltf-validator`).
//   npm install --prefix DIR gltf-validator
//   NODE_PATH=DIR/node_modules node scripts/validate_gltf.cjs FILE.glb [FILE2.glb ...]
// Prints one JSON line per file: {file, validatorVersion, errors, warnings, infos, hints, messages}
// (messages: the first 20 issues); exits 1 when any file has an error.
const fs = require("fs");
const validator = require("gltf-validator");

async function main(files) {
  let failed = false;
  for (const file of files) {
    const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(file)), { uri: file, maxIssues: 200 });
    const i = report.issues;
    failed = failed || i.numErrors > 0;
    console.log(JSON.stringify({
      file, validatorVersion: report.validatorVersion, errors: i.numErrors, warnings: i.numWarnings,
      infos: i.numInfos, hints: i.numHints,
      messages: i.messages.slice(0, 20).map((m) => ({ code: m.code, severity: m.severity, message: m.message, pointer: m.pointer })),
    }));
  }
  process.exit(failed ? 1 : 0);
}

main(process.argv.slice(2)).catch((e) => { console.error(String(e)); process.exit(2); });
