// Used by no-daemon.test.ts: start a box through a private server, report pids, then either
// end without any cleanup ("exit") or wait to be killed ("kill").
import { Boxlite } from "../dist/index.js";

const [rootfsPath, mode] = process.argv.slice(2);
const rt = await Boxlite.local();
const box = await rt.create({ rootfsPath });
await box.start();
const info = await box.info();
process.stdout.write(`${JSON.stringify({ server: rt.serverPid, box: info.state.pid })}\n`);
if (mode === "kill") setInterval(() => {}, 1000);
