// Node's built-in fetch with nothing configured: with NODE_USE_ENV_PROXY=1
// Node reads HTTPS_PROXY and NO_PROXY, and NODE_EXTRA_CA_CERTS adds the
// proxy's roots, as in an injected pod.
//
//   node fetch_client.mjs URL...
//
// Prints "STATUS BODY-BYTES" per URL, or "ERROR ...". EGRESS_TEST_RESOLVE=
// host=addr,... stands in for cluster DNS (the proxy's Service name).
import dns from "node:dns";

const names = new Map(
  (process.env.EGRESS_TEST_RESOLVE ?? "")
    .split(",")
    .filter((pair) => pair.includes("="))
    .map((pair) => pair.split("=", 2)),
);
const lookup = dns.lookup;
dns.lookup = (host, ...rest) => lookup(names.get(host) ?? host, ...rest);

let failed = false;
for (const url of process.argv.slice(2)) {
  try {
    const response = await fetch(url, { signal: AbortSignal.timeout(20000) });
    const body = await response.arrayBuffer();
    console.log(response.status, body.byteLength);
  } catch (error) {
    console.log("ERROR", error.cause?.message ?? error.message);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
