// The `__NAME__` actor. Build it with `./build.sh`, then serve it with
// `grove run --plugins .` and call it: `grove call __NAME__/1 hello '"Ayla"'`.
//
// componentize-js exports an object per exported WIT interface, named after
// the interface in camelCase: `lifecycle` (Grove's hooks, all seven
// required) and `__LOWER_CAMEL__` (this actor's functions). The host's imports
// come from "grove:actor/host@0.1.0", also in camelCase; one that returns a
// WIT `result` throws its error. 64-bit integers are BigInts.
import { selfRef, setTimer, stateGet, statePut } from "grove:actor/host@0.1.0";

// The state table this actor keeps its rows in.
const TABLE = "greetings";

// Timer ticks since activation: in memory, gone when it deactivates.
let ticks = 0n;

export const lifecycle = {
  onActivate() {
    // Every second while the actor is active; it does not keep it active.
    setTimer("tick", 1000n, 1000n, false);
  },
  onDeactivate() {},
  onTimer(name) {
    ticks += 1n;
  },
  onReminder(name) {},
  onConnect(session) {},
  onMessage(session, payload, reliable) {},
  onDisconnect(session, reason) {},
};

export const __LOWER_CAMEL__ = {
  hello(name) {
    const key = selfRef().key;
    // Rows survive deactivation and restarts; a state error throws, which
    // traps the turn, and the caller gets the error.
    const raw = stateGet(TABLE, key, undefined);
    const greeted = (raw ? Number(new TextDecoder().decode(raw)) : 0) + 1;
    statePut(TABLE, key, undefined, new TextEncoder().encode(String(greeted)));
    return `Hello, ${name}! ${greeted} greetings from __NAME__/${key}.`;
  },
  ticks() {
    return ticks;
  },
};
