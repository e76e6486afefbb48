/** qkd's version (package.json's), for the CLI, reports and cache keys. */
export const VERSION = '0.1.0';
