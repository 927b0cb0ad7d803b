// Stub of k6/execution: the VU number k6emu is starting.
export default {
  get vu() {
    return { idInTest: globalThis.__k6emu.vu, idInInstance: globalThis.__k6emu.vu, iterationInScenario: 0 };
  },
};
