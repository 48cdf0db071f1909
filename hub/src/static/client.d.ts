// TypeScript declarations of /client.js: being written (see docs/protocol.md).
export declare class HubClient {}
