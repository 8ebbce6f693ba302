// Offline checks of deploy/: lints deploy/Dockerfile with dockerfile-utils, validates every
// Kubernetes object of deploy/k8s/*.yaml against the API schemas of kubernetes-models, and
// parses deploy/compose.yaml. Then checks that everything ships secure by default: no
// --allow-insecure anywhere, no Secret object (real secrets are created, never committed),
// every ckad container given --auth-tokens and --tls-cert/--tls-key from mounted Secrets, its
// probes able to speak TLS, and the router speaking TLS on both sides. And the scale-out of
// the page and the JSON API: every ckad container with --http-listen sends its calls to the
// router's Service (--http-grpc-target), lists sessions across exactly the router's replicas
// (--http-peers), trusts ca.crt from the TLS Secret (--http-grpc-ca), and carries prometheus.io
// annotations that match its HTTPS port; the router's HTTP entry reaches the same replicas'
// HTTP ports over verified TLS. Exits 1 after printing every problem found.
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
const manifests = [];  // [file, object]
for (const file of readdirSync(join(deploy, "k8s")).filter((f) => f.endsWith(".yaml"))) {
  const docs = parseAllDocuments(readFileSync(join(deploy, "k8s", file), "utf8"));
  for (const doc of docs) {
    if (doc.errors.length) { fail(`${file}: ${doc.errors[0].message}`); continue; }
    const obj = doc.toJS();
    if (!obj) continue;
    manifests.push([file, obj]);
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

const composeText = readFileSync(join(deploy, "compose.yaml"), "utf8");
const compose = parse(composeText);
if (!compose?.services?.ckad) fail("compose.yaml has no service ckad");

// Secure by default.
const routerConf = readFileSync(join(deploy, "router", "nginx.conf.template"), "utf8");
const uncommented = (text) => text.split("\n").filter((l) => !/^\s*#/.test(l)).join("\n");
for (const [name, text] of [["Dockerfile", uncommented(dockerfile)],
                            ["compose.yaml", uncommented(composeText)],
                            ["router/nginx.conf.template", uncommented(routerConf)],
                            ...manifests.map(([f, o]) => [`k8s/${f}`, JSON.stringify(o)])]) {
  if (text.includes("--allow-insecure")) fail(`${name} passes --allow-insecure`);
}
const cmd = dockerfile.match(/^CMD \[([^\]]*)\]/m);
const defaults = cmd ? JSON.parse(`[${cmd[1].replace(/\\\n/g, "")}]`) : [];
for (const flag of ["--auth-tokens", "--tls-cert", "--tls-key"]) {
  if (!defaults.includes(flag)) fail(`Dockerfile: the default CMD of ckad lacks ${flag}`);
}
if (!/^ENTRYPOINT \["\/usr\/local\/bin\/ckad"\]$/m.test(dockerfile)) {
  fail('Dockerfile: ENTRYPOINT must be ["/usr/local/bin/ckad"] alone (arguments go in CMD, ' +
       "so that Kubernetes args replace them instead of repeating them)");
}

const ckadContainers = [];  // [where, container, pod spec]
for (const [file, obj] of manifests) {
  if (obj.kind === "Secret") {
    fail(`k8s/${file}: Secret ${obj.metadata?.name}: manifests carry no secrets; ` +
         "they are created with kubectl (deploy/README.md, Security)");
  }
  const pod = obj.spec?.template?.spec;
  for (const c of pod?.containers ?? []) {
    if (/(^|\/)ckad(:|$)/.test(c.image ?? "")) ckadContainers.push([`k8s/${file}: ${c.name}`, c, pod]);
  }
}
if (ckadContainers.length === 0) fail("no ckad container in deploy/k8s");

// The Secret volume that `path` (a file a flag names) lives in, or a reason why none.
const secretOf = (c, pod, path) => {
  const mount = (c.volumeMounts ?? []).find((m) => path.startsWith(`${m.mountPath}/`));
  if (!mount) return [null, `${path} is on no mounted volume`];
  const volume = (pod.volumes ?? []).find((v) => v.name === mount.name);
  if (!volume?.secret?.secretName) return [null, `${path} is on volume ${mount.name}, not a Secret`];
  if (!mount.readOnly) return [null, `volume ${mount.name} is not mounted readOnly`];
  return [volume.secret.secretName, null];
};
// The value a container's command line gives `flag` ("--f=v" or "--f v"), or null.
const flagValue = (c, flag) => {
  const args = [...(c.command ?? []), ...(c.args ?? [])];
  const i = args.findIndex((a) => a === flag || a.startsWith(`${flag}=`));
  if (i < 0) return null;
  return args[i] === flag ? args[i + 1] : args[i].slice(flag.length + 1);
};
for (const [where, c, pod] of ckadContainers) {
  const value = (flag) => flagValue(c, flag);
  for (const flag of ["--auth-tokens", "--tls-cert", "--tls-key"]) {
    const path = value(flag);
    if (!path) { fail(`${where}: ckad without ${flag}`); continue; }
    const [secret, why] = secretOf(c, pod, path);
    if (why) fail(`${where}: ${flag}: ${why}`);
    const type = flag === "--auth-tokens" ? "tokens" : "TLS";
    if (secret && (type === "tokens") === (secret === "ckad-tls")) {
      fail(`${where}: ${flag} comes from Secret ${secret}, expected the ${type} Secret`);
    }
  }
  for (const probe of ["readinessProbe", "livenessProbe"]) {
    if (!c[probe]) fail(`${where}: no ${probe}`);
    else if (c[probe].grpc) fail(`${where}: ${probe} is a native gRPC probe, which cannot speak TLS`);
  }
}

// The router: TLS towards clients and towards ckad.
const routerConfigs = [["router/nginx.conf.template", routerConf]];
for (const [file, obj] of manifests) {
  if (obj.kind === "ConfigMap" && obj.data?.["nginx.conf"]) {
    routerConfigs.push([`k8s/${file}: ConfigMap ${obj.metadata.name}`, obj.data["nginx.conf"]]);
  }
}
for (const [where, conf] of routerConfigs) {
  if (/grpc_pass\s+grpc:\/\//.test(conf) || !/grpc_pass\s+grpcs:\/\//.test(conf)) {
    fail(`${where}: nginx must reach ckad with grpc_pass grpcs://`);
  }
  if (!/grpc_ssl_verify\s+on;/.test(conf)) fail(`${where}: grpc_ssl_verify on is missing`);
  const listens = [...uncommented(conf).matchAll(/^\s*listen\s+([^;]*);/gm)].map((m) => m[1]);
  if (listens.length === 0) fail(`${where}: nginx listens nowhere`);
  for (const l of listens) {
    if (!/(^|\s)ssl(\s|$)/.test(l)) fail(`${where}: "listen ${l}" must listen with ssl`);
  }
  for (const m of uncommented(conf).matchAll(/proxy_pass\s+([^;]*);/g)) {
    if (!m[1].startsWith("https://")) fail(`${where}: proxy_pass ${m[1]} must be https://`);
    if (!/proxy_ssl_verify\s+on;/.test(conf)) fail(`${where}: proxy_ssl_verify on is missing`);
  }
}

// The servers of upstream `name` in an nginx configuration, as "host:port".
const upstreamServers = (conf, name) => {
  const block = uncommented(conf).match(new RegExp(`upstream\\s+${name}\\s*\\{([^}]*)\\}`));
  return block ? [...block[1].matchAll(/server\s+(\S+?)[\s;]/g)].map((m) => m[1]) : null;
};
const sameSet = (a, b) => a.length === b.length && [...a].sort().join() === [...b].sort().join();
const k8sRouter = routerConfigs.find(([where]) => where.startsWith("k8s/"));
const services = manifests.filter(([, o]) => o.kind === "Service").map(([, o]) => o);
for (const [where, c, pod] of ckadContainers) {
  const value = (flag) => flagValue(c, flag);
  const httpListen = value("--http-listen");
  if (!httpListen) continue;
  const httpPort = httpListen.slice(httpListen.lastIndexOf(":") + 1);
  const annotations = manifests.find(([, o]) => o.spec?.template?.spec === pod)?.[1]
    .spec.template.metadata?.annotations ?? {};
  if (annotations["prometheus.io/scrape"] !== "true") fail(`${where}: no prometheus.io/scrape "true"`);
  if (annotations["prometheus.io/port"] !== httpPort) {
    fail(`${where}: prometheus.io/port ${annotations["prometheus.io/port"]} is not --http-listen's ${httpPort}`);
  }
  if (annotations["prometheus.io/path"] !== "/metrics") fail(`${where}: prometheus.io/path is not /metrics`);
  if (annotations["prometheus.io/scheme"] !== "https") fail(`${where}: prometheus.io/scheme is not https (ckad serves TLS)`);
  const target = value("--http-grpc-target");
  const peers = value("--http-peers");
  const ca = value("--http-grpc-ca");
  if (!target || !peers || !ca) {
    fail(`${where}: --http-listen behind the router needs --http-grpc-target, --http-peers and --http-grpc-ca`);
    continue;
  }
  const [targetHost, targetPort] = [target.slice(0, target.lastIndexOf(":")), target.slice(target.lastIndexOf(":") + 1)];
  const routerService = services.find((o) => o.metadata.name === targetHost);
  if (!routerService?.spec?.selector?.["app.kubernetes.io/name"]?.includes("router") ||
      !(routerService.spec.ports ?? []).some((p) => String(p.port) === targetPort)) {
    fail(`${where}: --http-grpc-target ${target} is not a port of the router's Service`);
  }
  const [secret, why] = secretOf(c, pod, ca);
  if (why) fail(`${where}: --http-grpc-ca: ${why}`);
  else if (secret !== "ckad-tls") fail(`${where}: --http-grpc-ca comes from Secret ${secret}, expected ckad-tls`);
  if (!k8sRouter) { fail("no router ConfigMap in deploy/k8s"); continue; }
  const grpcReplicas = upstreamServers(k8sRouter[1], "ckad") ?? [];
  if (!sameSet(peers.split(","), grpcReplicas)) {
    fail(`${where}: --http-peers ${peers} is not the router's replicas ${grpcReplicas.join(",")}`);
  }
  const httpReplicas = grpcReplicas.map((r) => `${r.slice(0, r.lastIndexOf(":"))}:${httpPort}`);
  const httpUpstream = upstreamServers(k8sRouter[1], "ckad_http");
  if (!httpUpstream || !sameSet(httpUpstream, httpReplicas)) {
    fail(`${k8sRouter[0]}: upstream ckad_http ${httpUpstream} is not the replicas' HTTP ports ${httpReplicas.join(",")}`);
  }
}

if (problems) process.exit(1);
console.log(`OK: Dockerfile lint clean, ${objects} Kubernetes objects valid, compose.yaml parsed, ` +
            `secure by default (${ckadContainers.length} ckad container(s), ` +
            `${routerConfigs.length} router configurations)`);
