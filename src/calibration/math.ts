// Built-in math calibration text: grade-school word problems with worked, step-by-step solutions
// in GSM8K's train format (question, then steps with <<a*b=c>> calculator annotations, then
// "#### answer"). Templates with random names and quantities; every step is re-evaluated.
import { evaluateArithmetic, formatQuantity } from './arithmetic.ts';
import { CalibrationRandom } from './random.ts';

export interface MathProblem {
  /** problem kind, e.g. "shopping-change" */
  kind: MathProblemKind;
  question: string;
  /** the worked solution: one step per line, ending in "#### <answer>" */
  solution: string;
  answer: number;
  /** the drawn quantities (names excluded), for checking the answer independently */
  quantities: Record<string, number>;
}

interface Person { name: string; subject: string; object: string; possessive: string }

const people: readonly Person[] = [
  ...['Maya', 'Sofia', 'Aisha', 'Lena', 'Priya', 'Chloe', 'Mei', 'Fatima', 'Grace', 'Elena', 'Zara', 'Hannah', 'Nadia', 'Rosa', 'Yuki', 'Amara', 'Ingrid', 'Leila', 'Olivia', 'Tamar']
    .map((name) => ({ name, subject: 'she', object: 'her', possessive: 'her' })),
  ...['Liam', 'Noah', 'Omar', 'Mateo', 'Kenji', 'Ravi', 'Lucas', 'Ethan', 'Diego', 'Samuel', 'Tariq', 'Felix', 'Jonah', 'Kwame', 'Arjun', 'Marco', 'Hugo', 'Ivan', 'Daniel', 'Tomas']
    .map((name) => ({ name, subject: 'he', object: 'him', possessive: 'his' })),
];

const countables = ['apples', 'marbles', 'stickers', 'pencils', 'seashells', 'baseball cards', 'stamps', 'oranges', 'books', 'beads', 'coins', 'crayons'];
const shopItems: readonly [string, string][] = [['notebook', 'notebooks'], ['sandwich', 'sandwiches'], ['toy car', 'toy cars'], ['box of tea', 'boxes of tea'], ['ticket', 'tickets'], ['plant', 'plants'], ['comic book', 'comic books'], ['bag of rice', 'bags of rice'], ['T-shirt', 'T-shirts'], ['puzzle', 'puzzles']];
const bigItems = ['bicycle', 'guitar', 'tablet', 'jacket', 'skateboard', 'telescope', 'pair of shoes', 'camera', 'video game console', 'tent'];
const vehicles = ['train', 'bus', 'car', 'truck', 'ferry', 'cyclist'];
const plants = ['tomato plants', 'sunflowers', 'rose bushes', 'pepper plants', 'tulips', 'lettuce heads'];
const baked = ['cookies', 'muffins', 'cupcakes', 'brownies', 'pretzels'];
const groups = ['students in a class', 'children at a summer camp', 'members in a club', 'players in a league', 'guests at a party'];
const ingredients = ['cups of flour', 'eggs', 'cups of milk', 'spoons of sugar', 'cups of oats'];

export const MATH_PROBLEM_KINDS = [
  'shopping-change', 'give-and-receive', 'pages-left', 'fraction-of-group', 'discount', 'weekly-wages',
  'ages', 'equal-sharing', 'two-leg-trip', 'times-as-many', 'recipe-scaling', 'saving-weeks', 'garden-rows',
] as const;
export type MathProblemKind = typeof MATH_PROBLEM_KINDS[number];

/** Collects the solution steps; `calc` writes "expr = <<expr=v>>v" and checks v against the text of expr. */
class Worked {
  readonly lines: string[] = [];
  calc(expression: string, value: number, money = false): string {
    const evaluated = evaluateArithmetic(expression);
    if (Math.abs(evaluated - value) > 1e-9) throw new Error(`calibration generator bug: ${expression} is ${evaluated}, not ${value}`);
    const v = formatQuantity(value);
    return `${expression} = ${money ? '$' : ''}<<${expression}=${v}>>${v}`;
  }
  line(text: string) { this.lines.push(text); }
}

const cap = (s: string) => s[0].toUpperCase() + s.slice(1);

type Generator = (r: CalibrationRandom, w: Worked) => { question: string; answer: number; quantities: Record<string, number> };

const generators: Record<MathProblemKind, Generator> = {
  'shopping-change': (r, w) => {
    const p = r.pick(people);
    const [, items] = r.pick(shopItems);
    const n = r.int(2, 9), price = r.int(2, 11);
    const cost = n * price;
    const bill = [20, 50, 100].find((b) => b > cost)!;
    w.line(`${p.name} spends ${w.calc(`${n}*${price}`, cost, true)} on the ${items}.`);
    w.line(`${cap(p.possessive)} change is ${w.calc(`${bill}-${cost}`, bill - cost, true)}.`);
    const question = r.chance(0.5)
      ? `${p.name} buys ${n} ${items} that cost $${price} each. ${cap(p.subject)} pays with a $${bill} bill. How much change does ${p.subject} get back?`
      : `At the market, ${items} cost $${price} each. ${p.name} buys ${n} of them and hands the cashier $${bill}. How many dollars of change should ${p.name} receive?`;
    return { question, answer: bill - cost, quantities: { n, price, bill } };
  },
  'give-and-receive': (r, w) => {
    const [a, b, c] = r.pickDistinct(people, 3);
    const things = r.pick(countables);
    const start = r.int(20, 90), given = r.int(3, start - 5), received = r.int(2, 40);
    const afterGiving = start - given, end = afterGiving + received;
    w.line(`After giving some away, ${a.name} has ${w.calc(`${start}-${given}`, afterGiving)} ${things}.`);
    w.line(`After ${c.name}'s gift, ${a.subject} has ${w.calc(`${afterGiving}+${received}`, end)} ${things}.`);
    const question = `${a.name} has ${start} ${things}. ${cap(a.subject)} gives ${given} of them to ${b.name}. Later, ${c.name} gives ${a.object} ${received} more ${things}. How many ${things} does ${a.name} have now?`;
    return { question, answer: end, quantities: { start, given, received } };
  },
  'pages-left': (r, w) => {
    const p = r.pick(people);
    const perDay = r.int(6, 30), days = r.int(2, 12);
    const read = perDay * days, total = read + r.int(10, 200);
    w.line(`In ${days} days ${p.name} reads ${w.calc(`${perDay}*${days}`, read)} pages.`);
    w.line(`There are ${w.calc(`${total}-${read}`, total - read)} pages left to read.`);
    const question = r.chance(0.5)
      ? `A book has ${total} pages. ${p.name} reads ${perDay} pages every day for ${days} days. How many pages does ${p.subject} still have to read?`
      : `${p.name} is reading a ${total}-page novel. If ${p.subject} reads ${perDay} pages a day, how many pages are left after ${days} days?`;
    return { question, answer: total - read, quantities: { total, perDay, days } };
  },
  'fraction-of-group': (r, w) => {
    const group = r.pick(groups);
    const k = r.pick([2, 3, 4, 5]), m = r.pick([2, 3, 4]);
    const total = k * m * r.int(2, 12);
    const first = total / k, rest = total - first, second = rest / m, others = rest - second;
    const [act1, act2, act3] = r.pickDistinct(['walk', 'ride a bike', 'take the bus', 'get a ride from a parent', 'ride a scooter'], 3);
    w.line(`${w.calc(`${total}/${k}`, first)} of them ${act1}.`);
    w.line(`That leaves ${w.calc(`${total}-${first}`, rest)}.`);
    w.line(`Of those, ${w.calc(`${rest}/${m}`, second)} ${act2}.`);
    w.line(`So ${w.calc(`${rest}-${second}`, others)} ${act3}.`);
    const question = `There are ${total} ${group}. 1/${k} of them ${act1} to the park, and 1/${m} of the rest ${act2}. Everyone else will ${act3}. How many will ${act3}?`;
    return { question, answer: others, quantities: { total, k, m } };
  },
  discount: (r, w) => {
    const item = r.pick(bigItems);
    const percent = r.pick([10, 20, 25, 30, 40, 50]);
    const price = r.int(3, 40) * 20; // a multiple of 20 makes every listed percent a whole-dollar discount
    const off = (price * percent) / 100;
    w.line(`The discount is ${w.calc(`${price}*${percent}/100`, off, true)}.`);
    w.line(`The sale price is ${w.calc(`${price}-${off}`, price - off, true)}.`);
    const question = r.chance(0.5)
      ? `A ${item} costs $${price}. This week the store takes ${percent}% off. How much does the ${item} cost during the sale?`
      : `${r.pick(people).name} wants a ${item} priced at $${price}. With a ${percent}% discount coupon, how many dollars will it cost?`;
    return { question, answer: price - off, quantities: { price, percent } };
  },
  'weekly-wages': (r, w) => {
    const p = r.pick(people);
    const wage = r.int(8, 25), hours = r.int(2, 8), days = r.int(2, 6), weeks = r.int(2, 5);
    const daily = wage * hours, weekly = daily * days, total = weekly * weeks;
    w.line(`Each day ${p.subject} earns ${w.calc(`${wage}*${hours}`, daily, true)}.`);
    w.line(`Each week ${p.subject} earns ${w.calc(`${daily}*${days}`, weekly, true)}.`);
    w.line(`In ${weeks} weeks ${p.subject} earns ${w.calc(`${weekly}*${weeks}`, total, true)}.`);
    const question = `${p.name} earns $${wage} an hour at a part-time job. ${cap(p.subject)} works ${hours} hours a day, ${days} days a week. How much money does ${p.subject} earn in ${weeks} weeks?`;
    return { question, answer: total, quantities: { wage, hours, days, weeks } };
  },
  ages: (r, w) => {
    const [a, b] = r.pickDistinct(people, 2);
    const younger = r.int(4, 30), gap = r.int(2, 15), years = r.int(2, 10);
    const older = younger + gap;
    w.line(`${a.name} is ${w.calc(`${younger}+${gap}`, older)} years old now.`);
    w.line(`In ${years} years ${a.name} will be ${w.calc(`${older}+${years}`, older + years)} and ${b.name} will be ${w.calc(`${younger}+${years}`, younger + years)}.`);
    w.line(`Together they will be ${w.calc(`${older + years}+${younger + years}`, older + younger + 2 * years)} years old.`);
    const question = `${a.name} is ${gap} years older than ${b.name}. ${b.name} is ${younger} years old. What will the sum of their ages be in ${years} years?`;
    return { question, answer: older + younger + 2 * years, quantities: { younger, gap, years } };
  },
  'equal-sharing': (r, w) => {
    const p = r.pick(people);
    const food = r.pick(baked);
    const friends = r.int(2, 9), each = r.int(2, 12), kept = r.int(1, 10);
    const total = friends * each + kept;
    w.line(`${p.name} gives away ${w.calc(`${total}-${kept}`, total - kept)} ${food}.`);
    w.line(`Each friend gets ${w.calc(`${total - kept}/${friends}`, each)} ${food}.`);
    const question = `${p.name} baked ${total} ${food}. ${cap(p.subject)} kept ${kept} for ${p.possessive} family and shared the rest equally among ${friends} friends. How many ${food} did each friend get?`;
    return { question, answer: each, quantities: { total, kept, friends } };
  },
  'two-leg-trip': (r, w) => {
    const vehicle = r.pick(vehicles);
    const unit = r.pick(['km', 'miles']);
    const v1 = r.int(4, 18) * 5, t1 = r.int(2, 5), v2 = r.int(4, 18) * 5, t2 = r.int(2, 5);
    const d1 = v1 * t1, d2 = v2 * t2;
    w.line(`First it goes ${w.calc(`${v1}*${t1}`, d1)} ${unit}.`);
    w.line(`Then it goes ${w.calc(`${v2}*${t2}`, d2)} ${unit}.`);
    w.line(`In all it travels ${w.calc(`${d1}+${d2}`, d1 + d2)} ${unit}.`);
    const question = `A ${vehicle} travels at ${v1} ${unit} per hour for ${t1} hours, then at ${v2} ${unit} per hour for ${t2} more hours. How many ${unit} does it travel altogether?`;
    return { question, answer: d1 + d2, quantities: { v1, t1, v2, t2 } };
  },
  'times-as-many': (r, w) => {
    const [a, b, c] = r.pickDistinct(people, 3);
    const things = r.pick(countables);
    const times = r.int(2, 5), base = r.int(3, 25), fewer = r.int(1, 10);
    const aCount = times * base, cCount = aCount - fewer;
    w.line(`${a.name} has ${w.calc(`${times}*${base}`, aCount)} ${things}.`);
    w.line(`${c.name} has ${w.calc(`${aCount}-${fewer}`, cCount)} ${things}.`);
    w.line(`Together they have ${w.calc(`${aCount}+${base}+${cCount}`, aCount + base + cCount)} ${things}.`);
    const question = `${a.name} has ${times} times as many ${things} as ${b.name}. ${b.name} has ${base} ${things}. ${c.name} has ${fewer} fewer ${things} than ${a.name}. How many ${things} do the three of them have in total?`;
    return { question, answer: aCount + base + cCount, quantities: { times, base, fewer } };
  },
  'recipe-scaling': (r, w) => {
    const p = r.pick(people);
    const ingredient = r.pick(ingredients);
    const servings = r.pick([2, 4, 6, 8]), amount = r.int(1, 6), factor = r.int(2, 6);
    const wanted = servings * factor;
    w.line(`${wanted} servings is ${w.calc(`${wanted}/${servings}`, factor)} times the recipe.`);
    w.line(`${cap(p.subject)} needs ${w.calc(`${amount}*${factor}`, amount * factor)} ${ingredient}.`);
    const question = `A recipe uses ${amount} ${ingredient} to make ${servings} servings. ${p.name} wants to make ${wanted} servings. How many ${ingredient} does ${p.subject} need?`;
    return { question, answer: amount * factor, quantities: { amount, servings, wanted } };
  },
  'saving-weeks': (r, w) => {
    const p = r.pick(people);
    const item = r.pick(bigItems);
    const perWeek = r.int(3, 20) * 5, weeks = r.int(2, 15), saved = r.int(0, 20) * 5;
    const price = saved + perWeek * weeks;
    w.line(`${cap(p.subject)} still needs ${w.calc(`${price}-${saved}`, price - saved, true)}.`);
    w.line(`That takes ${w.calc(`${price - saved}/${perWeek}`, weeks)} weeks.`);
    const question = `${p.name} wants to buy a ${item} that costs $${price}. ${cap(p.subject)} has already saved $${saved} and saves $${perWeek} more every week. How many weeks will it take ${p.object} to have enough money?`;
    return { question, answer: weeks, quantities: { price, saved, perWeek } };
  },
  'garden-rows': (r, w) => {
    const p = r.pick(people);
    const crop = r.pick(plants);
    const rows = r.int(3, 12), perRow = r.int(4, 15);
    const planted = rows * perRow, failed = r.int(1, Math.min(20, planted - 1));
    w.line(`${p.name} plants ${w.calc(`${rows}*${perRow}`, planted)} ${crop}.`);
    w.line(`${w.calc(`${planted}-${failed}`, planted - failed)} of them grow.`);
    const question = `${p.name} plants ${rows} rows of ${crop} with ${perRow} in each row. ${failed} of them do not survive the first frost. How many ${crop} are left?`;
    return { question, answer: planted - failed, quantities: { rows, perRow, failed } };
  },
};

/** Problem `index` of the built-in set for (version, seed): the same text on every machine. */
export function mathProblem(index: number, seed: number, version: string): MathProblem {
  const r = new CalibrationRandom('math', version, seed, index);
  // kinds in a shuffled round-robin so any 13 consecutive problems cover every kind
  const kind = MATH_PROBLEM_KINDS[(index + (new CalibrationRandom('math-kinds', version, seed).int(0, 1000))) % MATH_PROBLEM_KINDS.length];
  const w = new Worked();
  const { question, answer, quantities } = generators[kind](r, w);
  if (!Number.isInteger(answer) || answer < 0) throw new Error(`calibration generator bug: ${kind} answer ${answer}`);
  w.line(`#### ${answer}`);
  return { kind, question, solution: w.lines.join('\n'), answer, quantities };
}
