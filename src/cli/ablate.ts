// `mathneuro ablate`: boost's pipeline with prune instead of scale (see boost.ts).
export { ablateCommand as command } from './boost.ts';
