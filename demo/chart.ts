/** The live loss chart: training loss per step and held-out loss at each evaluation, drawn by uPlot. */
import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';

export class LossChart {
  readonly steps: number[] = [];
  readonly train: (number | null)[] = [];
  readonly validation: (number | null)[] = [];
  private plot: uPlot;
  private pending = false;

  constructor(readonly el: HTMLElement) {
    this.plot = new uPlot(
      {
        width: Math.max(320, el.clientWidth || 800),
        height: 260,
        scales: { x: { time: false } },
        axes: [{ label: 'step' }, { label: 'loss' }],
        series: [
          { label: 'step' },
          { label: 'train', stroke: '#2563eb', width: 1.5, points: { show: false } },
          { label: 'held out', stroke: '#d97706', width: 2, spanGaps: true, points: { show: true, size: 6 } },
        ],
      },
      [[], [], []],
      el,
    );
    new ResizeObserver(() => this.plot.setSize({ width: Math.max(320, el.clientWidth), height: 260 })).observe(el);
  }

  /** The series as drawn: what tests read instead of pixels. */
  get data(): { steps: number[]; train: (number | null)[]; validation: (number | null)[] } {
    const [steps, train, validation] = this.plot.data as unknown as [number[], (number | null)[], (number | null)[]];
    return { steps: [...steps], train: [...train], validation: [...validation] };
  }

  clear(): void {
    this.steps.length = this.train.length = this.validation.length = 0;
    this.redraw();
  }

  addTrain(step: number, loss: number): void {
    this.train[this.index(step)] = loss;
    this.redraw();
  }

  addValidation(step: number, loss: number): void {
    this.validation[this.index(step)] = loss;
    this.redraw();
  }

  /** The position of a step's point, added when new (an evaluation before training is step 0). */
  private index(step: number): number {
    const i = this.steps.indexOf(step);
    if (i >= 0) return i;
    this.steps.push(step);
    this.train.push(null);
    this.validation.push(null);
    return this.steps.length - 1;
  }

  /** At most one redraw per frame, however fast the steps come. */
  private redraw(): void {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.plot.setData([this.steps, this.train, this.validation] as uPlot.AlignedData);
    });
  }
}
