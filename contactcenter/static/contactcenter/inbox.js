// Entry point of the agent inbox (plain ES modules, no build step).
import { start } from "./inbox/main.js";

start().catch((error) => console.error("inbox failed to start", error));
