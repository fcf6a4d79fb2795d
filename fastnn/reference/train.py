"""The book's ``ch05/train_neuralnet.py`` as a function: the baseline of ``fastnn train``.

As in the book: float32 images into a float64 TwoLayerNet(784, 50, 10), minibatches drawn with
replacement, ``params[key] -= learning_rate * grad[key]``, the loss evaluated again after each
update, and the accuracy of the whole training and test sets once per epoch.
"""
import numpy as np

from fastnn.reference.nets import TwoLayerNet


def train_neuralnet(x_train, t_train, x_test, t_test, iters_num=10000, batch_size=100,
                    learning_rate=0.1, hidden_size=50, seed=None, verbose=True):
    rng = np.random.default_rng(seed)
    network = TwoLayerNet(input_size=x_train.shape[1], hidden_size=hidden_size, output_size=10,
                          rng=seed)
    train_size = x_train.shape[0]
    train_loss_list, train_acc_list, test_acc_list = [], [], []
    iter_per_epoch = max(train_size / batch_size, 1)

    for i in range(iters_num):
        batch_mask = rng.choice(train_size, batch_size)
        x_batch = x_train[batch_mask]
        t_batch = t_train[batch_mask]

        grad = network.gradient(x_batch, t_batch)
        for key in ('W1', 'b1', 'W2', 'b2'):
            network.params[key] -= learning_rate * grad[key]

        loss = network.loss(x_batch, t_batch)
        train_loss_list.append(loss)

        if i % iter_per_epoch == 0:
            train_acc = network.accuracy(x_train, t_train)
            test_acc = network.accuracy(x_test, t_test)
            train_acc_list.append(train_acc)
            test_acc_list.append(test_acc)
            if verbose:
                print(f"epoch {len(test_acc_list):3d}  iter {i:6d}  loss {loss:.4f}  "
                      f"train acc {train_acc:.4f}  test acc {test_acc:.4f}", flush=True)
    return network, train_loss_list, train_acc_list, test_acc_list
