export async function main(argv: string[]): Promise<number> { console.log('qkd', argv); return 0; }
