// Stub of k6/timers: node's timers.
const { setTimeout, clearTimeout, setInterval, clearInterval } = globalThis;
export { setTimeout, clearTimeout, setInterval, clearInterval };
