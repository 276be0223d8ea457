// Stellwerk for Node.js: a promise-based client of the resolver and a task-worker library.
export * from "./client.js";
export * from "./errors.js";
export * from "./types.js";
export * from "./worker.js";
