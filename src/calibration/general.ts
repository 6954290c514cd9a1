// Built-in general calibration text: short project-written passages on varied non-math topics,
// each followed by a reading question with four options and its answer, in the shape of RACE
// (article, question, options, answer). No digits, number words or math vocabulary, so the
// general statistics carry no arithmetic signal.
import { CalibrationRandom } from './random.ts';

export interface GeneralPassage {
  topic: GeneralTopicName;
  passage: string;
  question: string;
  options: string[];
  /** index of the right option */
  answerIndex: number;
}

interface Person { name: string; subject: string; object: string; possessive: string }
const people: readonly Person[] = [
  ...['Clara', 'Ines', 'Beatrice', 'Yara', 'Noor', 'Helga', 'Camille', 'Lucia', 'Anya', 'Mirela', 'Saoirse', 'Keiko', 'Adaeze', 'Marisol', 'Freya']
    .map((name) => ({ name, subject: 'she', object: 'her', possessive: 'her' })),
  ...['Anton', 'Bruno', 'Emeka', 'Farid', 'Gideon', 'Hamid', 'Joaquin', 'Lars', 'Matteo', 'Oskar', 'Pablo', 'Rafael', 'Soren', 'Teodor', 'Wendell']
    .map((name) => ({ name, subject: 'he', object: 'him', possessive: 'his' })),
];

interface Topic {
  /** what the passage is mainly about (an option of the "main idea" question) */
  about: string;
  places: readonly string[];
  objects: readonly string[];
  feelings: readonly string[];
  /** sentences; {P} name, {s} subject pronoun, {S} capitalized, {o} object, {p} possessive, {place}, {thing}, {feeling} */
  sentences: readonly string[];
  opening: readonly string[];
}

const topics = {
  gardening: {
    about: 'caring for a garden through the seasons',
    places: ['the community garden', 'the back yard', 'a greenhouse by the river', 'the school garden'],
    objects: ['a watering can', 'a packet of seeds', 'a pair of gloves', 'a wooden trowel'],
    feelings: ['patient', 'proud', 'hopeful', 'calm'],
    opening: ['Every spring, {P} spends the mornings in {place}.', 'When the frost finally lifted, {P} returned to {place}.'],
    sentences: [
      '{S} kneels in the soft soil and pulls weeds from between the rows of beans.',
      'The tomatoes need sunlight, so {s} moves the pots away from the shade of the old wall.',
      '{S} always carries {thing}, because the weather changes quickly near the hills.',
      'Bees drift from flower to flower while {s} works, and {s} is careful not to disturb them.',
      'A neighbour stops by the fence to ask for advice about roses that will not bloom.',
      '{P} explains that good compost is the secret, and that it takes patience to make.',
      'By late summer the vines are heavy with fruit, and {s} shares the harvest with friends.',
      'Gardening makes {o} feel {feeling}, even on days when the rain ruins {p} plans.',
    ],
  },
  ocean: {
    about: 'life along the coast and the sea',
    places: ['a fishing village', 'the harbour', 'a rocky beach', 'a lighthouse on the cliff'],
    objects: ['a pair of binoculars', 'a faded map', 'a canvas bag', 'a warm sweater'],
    feelings: ['curious', 'peaceful', 'amazed', 'restless'],
    opening: ['{P} grew up in {place}, where the wind always smells of salt.', 'At dawn, {P} walks down to {place} to watch the boats leave.'],
    sentences: [
      'Seals rest on the rocks and lift their heads when gulls cry overhead.',
      '{S} brings {thing} to look for dolphins far out beyond the waves.',
      'The fishermen mend their nets on the pier and talk about the coming storm.',
      'At low tide, small crabs hide in pools among the seaweed.',
      '{P} learned from {p} grandmother how to read the colour of the sky before a gale.',
      'In winter the waves crash against the sea wall and spray reaches the street.',
      'Tourists arrive in summer, but {s} prefers the quiet weeks of autumn.',
      'Standing by the water always leaves {o} feeling {feeling}.',
    ],
  },
  music: {
    about: 'learning to play music and performing',
    places: ['a small concert hall', 'the music school', 'a crowded cafe', 'the town square'],
    objects: ['an old violin', 'a borrowed guitar', 'a stack of sheet music', 'a pair of drumsticks'],
    feelings: ['nervous', 'joyful', 'determined', 'inspired'],
    opening: ['{P} had practised for months before the evening at {place}.', 'Music filled {place} the night {P} played in public.'],
    sentences: [
      '{S} carried {thing} wrapped in a soft cloth to protect it from the rain.',
      '{p} teacher told {o} to listen to the silence between the notes.',
      'Before the performance, {s} felt {feeling} and took a slow breath.',
      'The audience grew quiet as the lights dimmed and the melody began.',
      'In the middle of the song, a string slipped out of tune, but {s} kept playing.',
      'Afterwards, strangers came to thank {o} and asked where {s} had learned.',
      '{S} believes that practice matters more than talent.',
      'On the walk home, {s} hummed the tune again and again.',
    ],
  },
  history: {
    about: 'how an old town kept its traditions',
    places: ['the old market town', 'a castle on the hill', 'the village museum', 'an abandoned monastery'],
    objects: ['a leather diary', 'a carved wooden box', 'a rusty key', 'a faded photograph'],
    feelings: ['fascinated', 'moved', 'curious', 'respectful'],
    opening: ['Long ago, {place} was a busy crossing for merchants and pilgrims.', '{P} works as a guide in {place}, telling visitors about its past.'],
    sentences: [
      'Travellers traded wool, salt and spices in its narrow streets.',
      'In the museum, {P} found {thing} that had belonged to a weaver.',
      'The stone bridge survived floods and wars, and people still cross it every day.',
      'Every autumn the town holds a festival with lanterns and old songs.',
      'Historians believe the walls were built to protect the town from raiders.',
      'Reading the letters of ordinary people made {o} feel {feeling}.',
      '{S} tells visitors that history is made of small stories as well as great events.',
      'The bell in the tower still rings at noon, as it has for centuries.',
    ],
  },
  cooking: {
    about: 'preparing a family meal',
    places: ['a busy kitchen', "{p} grandmother's house", 'a cooking class', 'a small restaurant'],
    objects: ['a heavy iron pan', 'a jar of spices', 'a handwritten recipe', 'a wooden spoon'],
    feelings: ['happy', 'relaxed', 'proud', 'grateful'],
    opening: ['On holidays, {P} cooks for the whole family in {place}.', '{P} learned to cook in {place} when {s} was young.'],
    sentences: [
      '{S} chops onions and garlic while the soup warms on the stove.',
      '{p} favourite tool is {thing}, which has been in the family for years.',
      'The smell of fresh bread drifts through the open window.',
      'Cousins arrive early to help set the table and taste the sauce.',
      '{P} says that the best dishes are simple and made with care.',
      'When a dish burns, {s} laughs and tries again.',
      'After dinner everyone lingers at the table, telling stories.',
      'Cooking for others makes {o} feel {feeling}.',
    ],
  },
  forest: {
    about: 'exploring a forest and its animals',
    places: ['a pine forest', 'the national park', 'a valley full of oaks', 'the edge of the woods'],
    objects: ['a compass', 'a sketchbook', 'a flask of tea', 'a walking stick'],
    feelings: ['alert', 'calm', 'thrilled', 'curious'],
    opening: ['{P} set out early to hike through {place}.', 'Few people visit {place} in winter, but {P} loves it then.'],
    sentences: [
      'Deer tracks crossed the muddy path near a fallen tree.',
      '{S} packed {thing} so {s} could stop and draw the birds.',
      'An owl watched from a branch, its eyes bright in the shadows.',
      'The stream was cold and clear, and small fish darted beneath the stones.',
      'A ranger warned {o} to stay on the trail because bears had been seen nearby.',
      'Moss covered the rocks like a green blanket.',
      'As the light faded, the forest grew quiet and the air smelled of resin.',
      'The long walk left {o} feeling {feeling} and tired.',
    ],
  },
  science: {
    about: 'a young person discovering how science works',
    places: ['the school laboratory', 'a science fair', 'a university library', 'an observatory'],
    objects: ['a magnifying glass', 'a notebook of observations', 'a microscope', 'a glass jar'],
    feelings: ['excited', 'puzzled', 'eager', 'patient'],
    opening: ['{P} has wanted to be a scientist since visiting {place} as a child.', 'The morning of the fair, {P} carried {p} project into {place}.'],
    sentences: [
      '{S} used {thing} to study the wings of insects found in the garden.',
      'Each experiment began with a question and a careful guess.',
      'When the results surprised {o}, {s} repeated the test to be sure.',
      '{p} mentor explained that mistakes are part of discovery.',
      'Plants in the sunny window grew taller than those kept in the dark.',
      'The judges asked thoughtful questions, and {s} answered honestly.',
      '{S} felt {feeling} when the project was finally finished.',
      'Science, {s} decided, is a way of looking closely at the world.',
    ],
  },
  travel: {
    about: 'a journey to an unfamiliar city',
    places: ['a mountain city', 'a port in the south', 'a capital full of museums', 'a desert town'],
    objects: ['a guidebook', 'a small backpack', 'a phrasebook', 'a camera'],
    feelings: ['lost', 'delighted', 'homesick', 'adventurous'],
    opening: ['{P} arrived in {place} late at night after a long train ride.', '{P} had never travelled abroad before the journey to {place}.'],
    sentences: [
      '{S} had packed only {thing} and a change of clothes.',
      'The streets were full of vendors selling fruit, bread and flowers.',
      'A kind stranger helped {o} find the way when the map made no sense.',
      '{S} tried the local dishes and learned a few polite words.',
      'In the evening, music drifted from the balconies above the square.',
      'Some days {s} felt {feeling}, but each morning brought something new.',
      'The journey taught {o} that people everywhere share the same hopes.',
      'When {s} returned home, {s} saw {p} own town with fresh eyes.',
    ],
  },
  sport: {
    about: 'training hard and learning teamwork',
    places: ['the local stadium', 'a muddy football pitch', 'the swimming pool', 'a mountain trail'],
    objects: ['a pair of running shoes', 'a water bottle', 'a team jersey', 'a stopwatch'],
    feelings: ['exhausted', 'confident', 'disappointed', 'thrilled'],
    opening: ['{P} trains at {place} before school whenever the weather allows.', 'The season began at {place} with heavy rain.'],
    sentences: [
      '{S} never leaves home without {thing}.',
      'The coach reminds the team that effort matters more than winning.',
      'During the final match, {P} passed the ball instead of shooting, and the team celebrated.',
      'An injury kept {o} on the bench, where {s} learned to cheer for others.',
      'Teammates stayed late to practise together and encourage each other.',
      'After losing a close game, {s} felt {feeling} but promised to improve.',
      'Stretching and rest became part of {p} routine.',
      'Sport taught {o} to be patient with {p} own progress.',
    ],
  },
  art: {
    about: 'painting and finding inspiration',
    places: ['a sunny studio', 'the city gallery', 'a riverside park', 'an art school'],
    objects: ['a box of paints', 'a charcoal pencil', 'a canvas', 'a worn brush'],
    feelings: ['inspired', 'frustrated', 'peaceful', 'proud'],
    opening: ['{P} paints every afternoon in {place}.', 'The exhibition at {place} changed how {P} thought about colour.'],
    sentences: [
      '{S} keeps {thing} in a drawer beside the window.',
      'Light from the river makes the shadows blue in the late afternoon.',
      'Some paintings take weeks, and others are finished in a sudden burst of energy.',
      'A famous painter told {o} to paint what {s} loves.',
      'Visitors stop to watch {o} work and ask about the faces in {p} portraits.',
      'When an idea does not work, {s} feels {feeling} and starts again.',
      'Art, {s} says, is a conversation between the eye and the heart.',
      '{p} friends hang {p} sketches in their kitchens.',
    ],
  },
  weather: {
    about: 'a storm and how a village prepared for it',
    places: ['a village in the hills', 'a farm by the lake', 'a town on the plain', 'an island harbour'],
    objects: ['a lantern', 'a radio', 'a heavy raincoat', 'a bundle of firewood'],
    feelings: ['worried', 'relieved', 'brave', 'tired'],
    opening: ['Dark clouds gathered over {place} on a quiet afternoon.', 'The radio warned everyone in {place} that a storm was coming.'],
    sentences: [
      '{P} fetched {thing} from the shed before the wind grew stronger.',
      'Neighbours tied down their boats and brought the animals inside.',
      'Thunder rolled across the valley, and the power went out.',
      'Families gathered around candles and told stories to pass the time.',
      'By morning the rain had stopped, but fallen branches blocked the road.',
      'Everyone worked together to clear the paths and repair the roofs.',
      '{P} felt {feeling} when the sun finally broke through the clouds.',
      'The storm reminded the village how deeply they depend on each other.',
    ],
  },
  animals: {
    about: 'caring for animals at a shelter',
    places: ['an animal shelter', 'a farm sanctuary', 'the city zoo', 'a veterinary clinic'],
    objects: ['a bag of food', 'a soft blanket', 'a leash', 'a brush'],
    feelings: ['cheerful', 'sorrowful', 'hopeful', 'moved'],
    opening: ['{P} volunteers at {place} on weekends.', 'The day {P} visited {place}, a shy puppy hid behind the door.'],
    sentences: [
      '{S} brings {thing} for the dogs that arrive cold and frightened.',
      'A grey cat follows {o} from room to room, purring loudly.',
      'The staff teach volunteers to be gentle and speak softly.',
      'When a family adopts a dog, {s} feels both {feeling} and glad.',
      'Some animals need weeks before they trust people again.',
      'A goat with a broken leg learned to walk again with care.',
      '{P} hopes to become a veterinarian some day.',
      'Caring for animals, {s} says, teaches kindness and patience.',
    ],
  },
  technology: {
    about: 'how a library changed with new technology',
    places: ['the public library', 'a repair shop', 'a small radio station', 'the town archive'],
    objects: ['an old typewriter', 'a laptop', 'a pair of headphones', 'a box of cables'],
    feelings: ['curious', 'impatient', 'nostalgic', 'pleased'],
    opening: ['{P} has worked at {place} for most of {p} life.', 'When {place} bought new computers, {P} was asked to teach the visitors.'],
    sentences: [
      '{S} still keeps {thing} on a shelf as a reminder of the past.',
      'Older readers were unsure in the beginning, but they soon enjoyed reading the news online.',
      'Children come after school to learn how to build simple websites.',
      '{P} explains that tools change, but the love of stories does not.',
      'A broken printer caused chaos until a student fixed it.',
      'Some days {s} feels {feeling} about how quickly things change.',
      'Neighbours bring old letters and photographs to be scanned and saved.',
      'The library has become a place where generations meet.',
    ],
  },
  health: {
    about: 'building healthy daily habits',
    places: ['a quiet neighbourhood', 'the city park', 'a seaside town', 'a busy office'],
    objects: ['a water bottle', 'a yoga mat', 'a bicycle helmet', 'a basket of vegetables'],
    feelings: ['energetic', 'refreshed', 'stressed', 'content'],
    opening: ['{P} decided to change {p} habits after a tiring winter in {place}.', 'Life in {place} used to leave {P} exhausted.'],
    sentences: [
      '{S} now walks to work instead of driving and carries {thing}.',
      'Going to bed earlier helped {o} wake up clear and rested.',
      '{S} cooks more vegetables and drinks less coffee.',
      'A doctor explained that small changes last longer than strict rules.',
      'Friends joined {o} for walks in the evening, talking and laughing.',
      'On stressful days, {s} takes a few slow breaths by the open window.',
      'After some weeks, {s} felt {feeling} and more patient with others.',
      'Healthy habits, {s} learned, are built slowly and kindly.',
    ],
  },
} satisfies Record<string, Topic>;

export type GeneralTopicName = keyof typeof topics;
export const GENERAL_TOPICS = Object.keys(topics) as GeneralTopicName[];

function fill(template: string, person: Person, slots: { place: string; thing: string; feeling: string }): string {
  const text = template
    .replaceAll('{place}', slots.place).replaceAll('{thing}', slots.thing).replaceAll('{feeling}', slots.feeling)
    .replaceAll('{P}', person.name).replaceAll('{S}', person.subject[0].toUpperCase() + person.subject.slice(1))
    .replaceAll('{s}', person.subject).replaceAll('{o}', person.object).replaceAll('{p}', person.possessive);
  return text[0].toUpperCase() + text.slice(1); // a sentence may start with {p}
}

const letters = ['A', 'B', 'C', 'D'];

/** Passage `index` of the built-in set for (version, seed): the same text on every machine. */
export function generalPassage(index: number, seed: number, version: string): GeneralPassage {
  const r = new CalibrationRandom('general', version, seed, index);
  const offset = new CalibrationRandom('general-topics', version, seed).int(0, 1000);
  const topicName = GENERAL_TOPICS[(index + offset) % GENERAL_TOPICS.length];
  const topic: Topic = topics[topicName];
  const person = r.pick(people);
  const slots = { place: r.pick(topic.places), thing: r.pick(topic.objects), feeling: r.pick(topic.feelings) };
  const chosen = r.pickDistinct(topic.sentences.map((_, i) => i), r.int(4, 6)).sort((a, b) => a - b);
  const passage = [r.pick(topic.opening), ...chosen.map((i) => topic.sentences[i])].map((s) => fill(s, person, slots)).join(' ');
  // the question asks about a slot the passage states, or its main idea; distractors come from the same pool
  const usesThing = chosen.some((i) => topic.sentences[i].includes('{thing}'));
  const usesFeeling = chosen.some((i) => topic.sentences[i].includes('{feeling}'));
  const kinds = ['main', ...(usesThing ? ['thing'] : []), ...(usesFeeling ? ['feeling'] : [])];
  const kind = r.pick(kinds);
  let question: string, right: string, pool: string[];
  if (kind === 'thing') {
    question = `Which of these does ${person.name} have in the passage?`;
    right = slots.thing;
    pool = [...topic.objects];
  } else if (kind === 'feeling') {
    question = `How does ${person.name} feel, according to the passage?`;
    right = slots.feeling;
    pool = [...topic.feelings];
  } else {
    question = 'What is the passage mainly about?';
    right = topic.about;
    pool = GENERAL_TOPICS.map((t) => (topics[t] as Topic).about);
  }
  const distractors = r.pickDistinct(pool.filter((x) => x !== right), 3);
  const answerIndex = r.int(0, 3);
  const options = [...distractors];
  options.splice(answerIndex, 0, right);
  const cleanOptions = options.map((o) => o[0].toUpperCase() + o.slice(1));
  return { topic: topicName, passage, question, options: cleanOptions, answerIndex };
}

/** The passage as calibration text: article, question, lettered options, answer (RACE-like). */
export function generalText(p: GeneralPassage): string {
  return `${p.passage}\nQuestion: ${p.question}\n${p.options.map((o, i) => `${letters[i]}. ${o}`).join('\n')}\nAnswer: ${letters[p.answerIndex]}`;
}
