//! `flowmote`: train, evaluate, calibrate, score, sample, export and plot
//! normalizing-flow models from CSV data. A thin CLI over `flowmote_tools`.

use clap::{Parser, Subcommand};
use flowmote_tools::cli;

#[derive(Parser, Debug)]
#[command(
    name = "flowmote",
    version,
    about = "Normalizing flows for microcontrollers: train on CSV, calibrate an anomaly threshold, export Rust for the firmware.",
    long_about = "Normalizing flows for microcontrollers.\n\n\
Typical use:\n  \
flowmote demo        # all of the below on the bundled accelerometer data\n  \
flowmote train --data train.csv --out model.json --val-out held_out.csv\n  \
flowmote calibrate --model model.json --data held_out.csv --false-alarm-rate 0.01\n  \
flowmote eval --model model.json --data test.csv [--label-column label]\n  \
flowmote score --model model.json --data new.csv --out scores.csv\n  \
flowmote export --model model.json --out fixtures/src/model.rs   # what the boards build\n  \
probe-rs run … | flowmote record --log - --out readings.csv       # a device's raw readings\n  \
probe-rs run … | flowmote monitor --log -                        # its scores and alarm\n\n\
CSV files need a header row; the delimiter (comma, semicolon or tab) is detected; `-` as a file \
is standard input (--data) or output (--out). Feature columns must be numeric; `train` leaves out, \
with a note, columns that are constant, not numeric, or increase on every row (time stamps, indices). \
Scores are −log p(x) in nats (higher = more anomalous), in the units of the data (the standardisation \
is part of the model).\n\n\
Exit status: 0 success; 1 an error (the message names the file, line and column where there is one; \
nothing is half-written); 2 a usage error (unknown flag, bad value); 141 standard output was closed \
early (e.g. `| head`)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Fit a flow to a CSV file by maximum likelihood and write model.json.
    #[command(
        long_about = "Fit a normalizing flow to the rows of a CSV file and write the model file.\n\n\
What it does: rows labelled anomalous (--label-column) are left out; the last --val-fraction of the \
rest (in file order; --val-split random for a seeded random sample) is held out. Per-column mean and standard deviation are fitted on the training rows and frozen \
as the first layer (so log p is in data units). Columns holding only integers (raw ADC counts) are \
dequantised: each epoch, uniform noise U(−0.5, 0.5)·step (step = the column's quantisation step, 1 for raw \
counts) is added, so the density cannot collapse onto the integer grid (--no-dequantize turns this off). \
A column constant in the training rows but not in the file (one value but for a rare few, all held out) is \
dequantised the same way with the smallest gap between its values in the file, so a rare value scores as an outlier. \
Gaussian noise of --noise standard deviations is added too. A trainable LU linear layer initialised to \
the full-covariance Gaussian fit follows the standardisation (--no-whiten leaves it out), so training \
starts from the Gaussian. Training is Adam with decoupled weight decay, a linear warm-up then cosine decay of the learning rate, \
gradient-norm clipping, a running average of the weights (--average), and early stopping on the \
validation NLL of that average that keeps the best epoch's average. \
The progress bar shows training and validation NLL (nats/row).\n\n\
Defaults: `--data` and `--out` are enough: every setting left open is chosen by validation NLL, \
each candidate trained on the same split and seed. (1) Noise: maf at --noise 0, 0.1, 0.2, 0.3 in turn, \
stopping at the first level that does worse. (2) Family: nsf (nsf-ar for one column) at that noise. \
(3) Size: the winner with two more layers and twice the hidden units; the starting size follows the \
number of training rows (2 layers × 16 hidden below 500 rows, 3 × 32 below 2000, else 4 × 32; 2 hidden \
layers each). Every candidate's figure is stored in the model file (provenance.settings.search). \
(4) Stacking: the candidates' weighted mixture Σ wₖ pₖ(x), weights fitted on the validation rows by EM \
(members under 1 % dropped), is kept if its validation NLL plus (members − 1)/(validation rows) nats — \
the price of the fitted weights — beats the best single candidate (--no-mixture keeps the best single \
flow). A mixture is an exact density too; its flash and device cycles are the members' sum. \
That is 4–7 \
trainings (five times over, a cross-validation committee, on files under ~1 000 rows): pass --flow, --noise, \
--layers and --hidden to train exactly one model. Holding out the last rows makes the choices favour models that hold up on \
later readings — on the bundled gait data (time-ordered test split) that picks noise 0.1–0.2, which a \
random split would not. The same --seed and data give the same model, whatever \
the number of threads (RAYON_NUM_THREADS).\n\n\
For a device (--target, default nrf52840; `flowmote list-targets`): the kept model must fit the target's \
budget, 64 KB of weights and 2 ms per score by default (--max-flash, --max-ms, --max-params, --max-macs). \
The last 10 % of the rows are held out first; the search above, on the rest, trains the teacher; if the \
teacher is over the budget, students (per family a 2- and a 4-layer flow as wide as the budget allows) are \
trained on the real rows alone and with fresh teacher samples (--teacher-samples; on a file large enough \
for one validation split, ~1 000 rows and more, on the real rows alone, and the teacher's search then adds \
no bigger candidate once its best is over the budget), and the one with the best NLL on the held-out rows is kept. Where the whitening layer alone takes over half the flash or time \
budget (wide data, soft-float parts), students are offered with the triangular whitening layer (half its \
cost) and without one too; if none fits at all, as one flow layer. Where that layer would take over a quarter \
of the flash (wide data), the students' weights are stored as i8, so about three times as many fit \
(--student-weights). --teacher-out writes the teacher; --target host keeps \
it whatever its size.\n\n\
Flow families (--flow); every one starts with the frozen standardisation; seeded random permutations \
sit between maf, nsf and nsf-ar layers (a rotation between coupling layers):\n  \
maf      masked autoregressive flow: each coordinate shifted and scaled (soft-clamped log-scale, --clamp) \
by a MADE network of the earlier ones. Cheap on the device; usually the best on small data.\n  \
coupling RealNVP affine coupling: one half of the coordinates scales and shifts the other. Fastest \
sampling; needs ≥ 2 columns.\n  \
nsf      neural spline flow (coupling): monotone rational-quadratic splines (8 bins on ±3 standard \
deviations, identity outside) of one half conditioned on the other. More flexible marginals than affine \
layers, more parameters; needs ≥ 2 columns.\n  \
nsf-ar   autoregressive neural spline flow: every coordinate's spline conditioned on the earlier ones \
(MADE network with 3·8−1 outputs per coordinate). The most flexible, the slowest to train.\n  \
cnf      continuous flow (one vector field, RK4), trained by flow matching.\n  \
auto     the default: see above."
    )]
    Train(Box<cli::TrainArgs>),
    /// Mean NLL of a CSV under a model; with labels, AUROC and alarm rates.
    #[command(
        long_about = "Evaluate a model on a CSV file: mean negative log-likelihood (nats per row, data units) \
over the rows that can be scored, and how many cannot (non-finite values: never silently dropped). With \
--label-column: the NLL of normal rows, AUROC of the score −log p, and the false-alarm and detection rates \
at the model's calibrated threshold (unscorable rows count as flagged). --json prints one JSON object \
(keys include nll, n, unscorable, auroc)."
    )]
    Eval(cli::EvalArgs),
    /// Store an anomaly threshold for a target false-alarm rate in the model.
    #[command(
        long_about = "Calibrate the anomaly threshold: the (1 − rate) quantile of −log p over normal rows \
(use rows the model was not trained on). The threshold, the rate and the file's SHA-256 are stored in the \
model file, rewritten atomically; `export` carries the threshold into the firmware."
    )]
    Calibrate(cli::CalibrateArgs),
    /// Adapt a model to a new installation's normal data (the device's commissioning code).
    #[command(
        long_about = "Run the device's commissioning adaptation (flowmote::adapt, the same code and \
arithmetic as the firmware) over the rows of --data, declared normal, in file order: a per-feature gain and \
offset correction in front of the model, fitted by Adam with the layers' backward passes, then folded into \
the model's first (standardisation) layer (every member's, for a mixture), so --out is an ordinary model \
file. The threshold is re-calibrated at the model's false-alarm rate (or --false-alarm-rate) on the last \
rows of --data, which adaptation does not use (--calibration-share). --json prints the NLL and false-alarm \
rate before and after. Flows and mixtures of flows (not continuous flows or i8 weights)."
    )]
    Adapt(cli::AdaptArgs),
    /// Per-row log p and anomaly flag (and why a row could not be scored).
    #[command(
        long_about = "Score every row: CSV with columns line (in the input file), log_prob, score (= −log_prob), \
anomaly (1/0 at the calibrated threshold; empty without one) and error (why a row could not be scored, e.g. \
a NaN or empty cell; such rows are flagged as anomalous when a threshold exists)."
    )]
    Score(cli::ScoreArgs),
    /// Draw samples from a model (same draws as the core's Flow::sample).
    #[command(
        long_about = "Draw samples with Xoshiro128PlusPlus::seed_from_u64(--seed), one after the other: \
the same numbers as the core's Flow::sample (and the exported firmware model) with that generator."
    )]
    Sample(cli::SampleArgs),
    /// Write the model as Rust source for the firmware.
    Export(flowmote_tools::export::ExportArgs),
    /// Draw figures (training curves, density, scores, ROC) as PNG files.
    Plot(flowmote_tools::plot::PlotArgs),
    /// Train → calibrate → export → score → eval on the bundled example data.
    #[command(long_about = "Run the whole pipeline on the bundled accelerometer data \
(examples/data/daphnet_gait.{train,test}.csv, or --train/--test): train maf at noise 0.2 in two sizes and keep the better on validation (fewer epochs; \
`flowmote train` without flags also searches the noise and the family, which takes minutes), \
calibrate at 1 % false alarms on the held-out validation rows, export Rust source, score the test file and \
evaluate it next to a full-covariance Gaussian. Everything goes to --out-dir (out/demo).")]
    Demo(cli::DemoArgs),
    /// The device targets a model can be trained for, with their budgets.
    #[command(
        long_about = "List the built-in device targets: each part's clock, FPU, flash and RAM, the \
instruction costs per multiply-add and per activation that estimate a score's time on it (and how they \
were measured), and the default budget of a kept model: 64 KB of weights and 2 ms per score."
    )]
    ListTargets,
    /// Turn a device's record-mode log into a CSV of raw readings.
    #[command(
        long_about = "Turn the log of a device running record mode (the board image built with \
`--features record`) into a CSV of its raw readings, to train a model on. The device logs one line per \
reading — `rec <seq> <x> <y> <z>` — and, every 1000 readings, `rec header <channel names>`, which becomes \
the CSV header (the bundled model's channels, so the file trains and scores with the same feature \
pipeline). Read a live device through a pipe, or a saved log:\n\n  \
probe-rs run --chip nRF52840_xxAA target/…/nrf52840dk | flowmote record --log - --out readings.csv\n  \
flowmote record --log saved.log --out readings.csv --json\n\n\
Any decoder output works: `probe-rs run` or `defmt-print` text (timestamps, levels, colour codes and \
location lines are ignored), or `defmt-print --json`; only lines with the word `rec` count. Reported on \
standard error (and as JSON with --json): readings written, gaps in the sequence numbers (lines lost \
between device and file, with the lines where they happened), restarts of the device, malformed `rec` \
lines (with their line numbers) and sensor errors the device reported. Ctrl-C ends a live recording and \
writes the file; --count stops after N readings. The file appears whole at the end (written to a \
temporary file beside it, then renamed); with --strict any lost reading is an error and nothing is \
written; `--out -` writes rows to standard output as they arrive."
    )]
    Record(cli::RecordArgs),
    /// Watch a running device's scores, threshold and alarm from its log.
    #[command(
        long_about = "Watch the monitor running on a device through its log: windows scored, the \
anomaly rate, the last score against the threshold, the debounced alarm and a bar per recent window \
(the threshold at mid-height; red when anomalous), sensor errors and other warnings. Reads the lines the \
firmware's monitor logs (`score S threshold T normal|ANOMALOUS alarm B`, `invalid features … alarm B`, \
sensor errors, `Stats { … }`) from any decoder's output, live or saved:\n\n  \
probe-rs run --chip nRF52840_xxAA target/…/nrf52840dk | flowmote monitor --log -\n  \
flowmote monitor --log saved.log --json\n\n\
On a terminal the view is redrawn in place; otherwise (or with --plain) it prints a line when the alarm \
goes on or off or the threshold changes, a one-line summary every --interval seconds, and the summary \
at the end. --json prints only the final summary as one JSON object (windows, normal, anomalous, \
invalid, anomaly_rate, threshold, last_score, alarm, alarms_raised, sensor_errors, …). Ctrl-C ends \
the log with the summary. A log without a single monitor line is an error."
    )]
    Monitor(cli::MonitorArgs),
}

fn main() {
    let args = Cli::parse();
    let r = match &args.cmd {
        Cmd::Train(a) => cli::run_train(a).map(|_| ()),
        Cmd::Eval(a) => cli::run_eval(a).map(|_| ()),
        Cmd::Calibrate(a) => cli::run_calibrate(a).map(|_| ()),
        Cmd::Adapt(a) => cli::run_adapt(a).map(|_| ()),
        Cmd::Score(a) => cli::run_score(a).map(|_| ()),
        Cmd::Sample(a) => cli::run_sample(a).map(|_| ()),
        Cmd::Export(a) => flowmote_tools::export::run(a),
        Cmd::Plot(a) => flowmote_tools::plot::run(a),
        Cmd::Demo(a) => cli::run_demo(a),
        Cmd::Record(a) => cli::run_record(a).map(|_| ()),
        Cmd::Monitor(a) => cli::run_monitor(a).map(|_| ()),
        Cmd::ListTargets => flowmote_tools::output::to_stdout(flowmote_tools::target::describe_all().as_bytes()),
    };
    if let Err(e) = r {
        if e.downcast_ref::<flowmote_tools::output::ClosedStdout>().is_some() {
            // The reader went away (`| head`): end quietly, as SIGPIPE would.
            std::process::exit(141);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
