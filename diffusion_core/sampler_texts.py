"""The TeX formula and the one-paragraph note that explain each sampler's update rule (the registry's
``SamplerInfo.formula`` / ``note``), as the Learn tab shows them above a step's numbers."""

FORMULAS = {}
NOTES = {}

FORMULAS["ddpm"] = (r"$$x_{t'} = \frac{\sqrt{\bar\alpha_{t'}}\,\beta}{1-\bar\alpha_t}\,\hat x_0"
                    r" + \frac{\sqrt{1-\beta}\,(1-\bar\alpha_{t'})}{1-\bar\alpha_t}\,x_t + \sigma z,"
                    r"\qquad \beta = 1-\frac{\bar\alpha_t}{\bar\alpha_{t'}},\quad"
                    r" \sigma^2 = \frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}\,\beta$$")
NOTES["ddpm"] = ("DDPM ancestral step: sample the posterior q(x_t' | x_t, x0_hat) (Ho et al. 2020, eqs. 6-7, "
                 "respaced as in Nichol & Dhariwal 2021); no noise on the last step.")

FORMULAS["ddim"] = (r"$$x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1-\bar\alpha_{t'}-\sigma_t^2}\,\hat\epsilon"
                    r" + \sigma_t z,\qquad \sigma_t = \eta\sqrt{\frac{1-\bar\alpha_{t'}}{1-\bar\alpha_t}}"
                    r"\sqrt{1-\frac{\bar\alpha_t}{\bar\alpha_{t'}}}$$")
NOTES["ddim"] = ("DDIM (Song et al. 2021, eqs. 12 and 16): jump to the noise level of t' along the predicted "
                 "noise direction; eta = 0 is deterministic.")

FORMULAS["dpm++"] = (r"$$x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t - \alpha_{t'}\left(e^{-h}-1\right) D,\qquad"
                     r" \alpha = \sqrt{\bar\alpha},\ \sigma = \sqrt{1-\bar\alpha},\ \lambda = \log\frac{\alpha}{\sigma},"
                     r"\ h = \lambda_{t'} - \lambda_t$$"
                     "\n\n"
                     r"$$D = \left(1 + \frac{1}{2r}\right)\hat x_0 - \frac{1}{2r}\,\hat x_0^{\mathrm{prev}},\qquad"
                     r" r = \frac{h_{\mathrm{prev}}}{h}\qquad(\text{first step: } D = \hat x_0)$$")
NOTES["dpm++"] = ("DPM-Solver++(2M) (Lu et al. 2022, Alg. 2): an exponential-integrator step in log-SNR time "
                  "lambda, second order from the previous step's x0_hat; the last step returns x0_hat.")

FORMULAS["dpm++3m"] = (r"$$x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t - \alpha_{t'}\left(e^{-h}-1\right)\hat x_0"
                       r" + \alpha_{t'}\left(\frac{e^{-h}-1}{h}+1\right) D_1"
                       r" - \alpha_{t'}\left(\frac{e^{-h}-1+h}{h^2}-\frac12\right) D_2$$"
                       "\n\n"
                       r"$$D_1, D_2:\ \text{first and second divided differences of } \hat x_0"
                       r" \text{ over the last three steps in } \lambda = \log\frac{\alpha}{\sigma}$$")
NOTES["dpm++3m"] = ("DPM-Solver++(3M) (Lu et al. 2022): the exponential-integrator step with the x0_hat of the two "
                    "previous steps; lower order on the first two steps and near the end of short runs.")

FORMULAS["unipc"] = (r"$$x_{t'} = \frac{\sigma_{t'}}{\sigma_t}\,x_t^c - \alpha_{t'}\left(e^{-h}-1\right)\hat x_0"
                     r" - \alpha_{t'}\,B(h)\sum_k \rho_k D_k,\qquad B(h) = e^{-h}-1$$"
                     "\n\n"
                     r"$$x_t^c:\ x_t \text{ corrected by UniC with this step's } \hat x_0 \text{ (no extra network call)}$$")
NOTES["unipc"] = ("UniPC (Zhao et al. 2023, bh2): the predictor UniP from x_t as corrected by UniC, which redoes the "
                  "previous step using the denoiser's output at x_t; D_k = (x0_hat_k - x0_hat) / r_k.")

FORMULAS["cold"] = (r"$$x_{t'} = x_t - D(\hat x_0, t) + D(\hat x_0, t')\qquad"
                    r"(\text{naive: } x_{t'} = D(\hat x_0, t'))$$")
NOTES["cold"] = ("Cold Diffusion (Bansal et al. 2022, Alg. 2): re-degrade the prediction to both severities and "
                 "move x_t by the difference; D(x, -1) = x.")

FORMULAS["progressive"] = (r"$$x_{t'} = \alpha_{t'}\,\hat x_0"
                           r" + \frac{\sigma_{t'}}{\sigma_t}\left(x_t - \alpha_t\,\hat x_0\right),"
                           r"\qquad \alpha = \sqrt{\bar\alpha},\ \sigma = \sqrt{1-\bar\alpha}$$")
NOTES["progressive"] = ("A progressively distilled student's own step (Salimans & Ho 2022, Alg. 2): deterministic "
                        "DDIM from x_t and x0_hat, on the grid the student was distilled on; the last step returns "
                        "x0_hat.")

FORMULAS["consistency"] = (r"$$x_{t'} = \alpha_{t'}\,f_\theta(x_t, t) + \sigma_{t'}\,z,\qquad z \sim \mathcal N(0, I),"
                           r"\qquad f_\theta(x_t, t) = \hat x_0$$")
NOTES["consistency"] = ("A consistency-distilled student's own step (Song et al. 2023, Alg. 1, multistep consistency "
                        "sampling): the network maps x_t straight to the end of the teacher's ODE trajectory, "
                        "f(x_t, t) = x0_hat; each step but the last noises that afresh to the next time.")
