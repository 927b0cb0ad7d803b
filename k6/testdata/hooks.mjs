// Module hooks of k6emu.mjs (registered with node:module's register): the k6 modules
// resolve to the stubs in stubs/, and every import made by a file of the k6 directory
// (outside testdata/) is reported to the main thread, which checks them.

let port;
let root;
let stubs;

export async function initialize(data) {
  ({ port, root, stubs } = data);
  port.on('message', (m) => {
    if (m === 'flush') {
      port.postMessage({ flushed: true });
    }
  });
}

export async function resolve(specifier, context, next) {
  const parent = context.parentURL || '';
  const policed = parent.startsWith(root) && !parent.startsWith(root + 'testdata/');
  let url;
  if (specifier === 'k6' || specifier.startsWith('k6/')) {
    url = stubs[specifier] || 'data:text/javascript,' + encodeURIComponent(`throw new Error(${JSON.stringify(`k6emu: ${specifier} is not emulated`)})`);
    if (policed) {
      port.postMessage({ parent, specifier, url: 'k6:' + specifier });
    }
    return { url, shortCircuit: true };
  }
  const r = await next(specifier, context);
  if (policed) {
    port.postMessage({ parent, specifier, url: r.url });
  }
  return r;
}

export async function load(url, context, next) {
  // The scripts are ES modules whatever the nearest package.json says, as in k6.
  if (url.startsWith(root) && url.endsWith('.js')) {
    const r = await next(url, { ...context, format: 'module' });
    return { ...r, format: 'module' };
  }
  return next(url, context);
}
