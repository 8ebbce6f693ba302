// Offline checks of deploy/: lints deploy/Dockerfile with dockerfile-utils, validates every
// Kubernetes object of deploy/k8s/*.yaml against the API schemas of kubernetes-models, and
// parses deploy/compose.yaml. Exits 1 on the first kind of problem found, after printing all.
//
//   cd deploy/tools && npm ci && node check_deploy.mjs
import { readFileSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { validate as lintDockerfile } from "dockerfile-utils";
import { parseAllDocuments, parse } from "yaml";

const deploy = join(dirname(fileURLToPath(import.meta.url)), "..");
let problems = 0;
const fail = (msg) => { console.log(`FAIL: ${msg}`); problems++; };

// Dockerfile: every diagnostic (error or warning) is a problem.
const dockerfile = readFileSync(join(deploy, "Dockerfile"), "utf8");
for (const d of lintDockerfile(dockerfile, {})) {
  fail(`Dockerfile line ${d.range.start.line + 1}: ${d.message}`);
}
for (const required of ["FROM debian:bookworm-slim AS build", "USER 10001", "HEALTHCHECK",
                        'ENTRYPOINT ["']) {
  if (!dockerfile.includes(required)) fail(`Dockerfile lacks "${required}"`);
}

// Kubernetes: each object validated by the model of its apiVersion and kind.
let objects = 0;
for (const file of readdirSync(join(deploy, "k8s")).filter((f) => f.endsWith(".yaml"))) {
  const docs = parseAllDocuments(readFileSync(join(deploy, "k8s", file), "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) { fail(`${file}: ${doc.errors[0].message}`); continue; }
    const obj = doc.toJS();
    if (!obj) continue;
    const [group, version] = obj.apiVersion.includes("/") ? obj.apiVersion.split("/")
                                                          : [null, obj.apiVersion];
    const module = `kubernetes-models/${group ? `${group}/` : ""}${version}/${obj.kind}`;
    try {
      const Model = (await import(module))[obj.kind];
      new Model(obj).validate();
      objects++;
    } catch (e) {
      fail(`${file}: ${obj.kind} ${obj.metadata?.name}: ${e.message.split("\n").slice(0, 4).join(" ")}`);
    }
  }
}
if (objects === 0) fail("no Kubernetes object validated");

const compose = parse(readFileSync(join(deploy, "compose.yaml"), "utf8"));
if (!compose?.services?.ckad) fail("compose.yaml has no service ckad");

if (problems) process.exit(1);
console.log(`OK: Dockerfile lint clean, ${objects} Kubernetes objects valid, compose.yaml parsed`);
