// The one Node built-in the SDK imports, declared here so that building it needs no @types/node
// (with @types/node installed the two declarations merge).
declare module 'node:crypto' {
    export function randomUUID(): string;
}
