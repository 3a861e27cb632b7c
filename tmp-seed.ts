import { openCliStore } from './cli/context.ts';
const store = await openCliStore();
const id = process.argv[2] ?? 'pocket-loom';
await store.append('product', id, 0, [{ type: 'created', data: { name: 'Pocket Loom', pitch: 'A palm-sized loom for weaving on the go.', audience: 'busy crafters who commute', price: { amount: 29, currency: 'EUR' }, notes: 'Crafters told us they want to weave during their commute. A big loom does not fit in a bag. They pay 20 to 40 euros for small tools. Most commute 45 minutes every day.', subscribers: ['ann@example.com', 'bo@example.com'] } }], { actor: { kind: 'human', id: 'op' } });
console.log('created', id);
await store.close();
